"""The GIL is released while tagstream waits, so other Python threads keep running."""

import threading
import time

import tagstream as ts


def _progress_during(wait, enqueue):
    """Runs `enqueue()` then `wait()` while a Python thread counts; the number of counts with
    timestamps well inside the wait. Holding the GIL for the whole wait would give 0."""
    stop = threading.Event()
    stamps = []

    def counter():
        while not stop.is_set():
            stamps.append(time.perf_counter())

    th = threading.Thread(target=counter)
    th.start()
    try:
        for _ in range(6):
            pending = enqueue()
            t0 = time.perf_counter()
            wait(pending)
            t1 = time.perf_counter()
            if t1 - t0 > 0.2:
                break
            enqueue.scale *= 2
        margin = 0.05
        inside = [s for s in stamps if t0 + margin < s < t1 - margin]
        return len(inside), t1 - t0
    finally:
        stop.set()
        th.join()


class _Chain:
    def __init__(self):
        self.scale = 4
        self.x = ts.randn(512, 512, seed=1)

    def __call__(self):
        y = self.x
        for _ in range(self.scale):
            y = ts.softmax(y @ self.x)
        return y


def test_synchronize_releases_the_gil():
    n, waited = _progress_during(lambda _: ts.synchronize(), _Chain())
    assert waited > 0.2, f"could not make a long enough wait ({waited:.3f} s)"
    assert n > 0, f"no Python thread ran during a {waited:.3f} s synchronize"


def test_numpy_releases_the_gil():
    n, waited = _progress_during(lambda t: t.numpy(), _Chain())
    assert waited > 0.2
    assert n > 0, f"no Python thread ran during a {waited:.3f} s .numpy()"
