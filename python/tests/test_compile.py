"""tagstream.compile: captures, replays, stats, result shapes, exceptions inside the function."""

import threading
import traceback

import numpy as np
import pytest

import tagstream as ts


def seed_like(ev, side):
    def model(a, b, c, d):
        add = a + b
        ts.ops.tagged_event_record(ev)
        with ts.scope.stream_switch(side):
            ts.ops.tagged_event_wait(ev)
            mm = c @ d
        return add, mm, c @ d, c + d
    return model


def test_captures_once_then_replays_with_right_values(tag):
    model = ts.compile(seed_like(ts.ops.create_tagged_event(tag("ev")), tag("side")),
                       mode="reduce-overhead")
    xs = [ts.randn(24, 24, seed=i) for i in range(4)]
    a, b, c, d = (x.numpy().astype(np.float64) for x in xs)
    for _ in range(3):
        out = model(*xs)
        assert isinstance(out, tuple) and len(out) == 4
        np.testing.assert_allclose(out[0].numpy(), a + b, rtol=1e-6)
        np.testing.assert_allclose(out[1].numpy(), c @ d, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(out[1].numpy(), out[2].numpy())
        np.testing.assert_allclose(out[3].numpy(), c + d, rtol=1e-6)
    assert model.stats() == {"captures": 1, "replays": 2, "eager_runs": 0,
                             "fell_back_to_eager": False}
    assert "wait" in model.graph_dump()
    model(*[ts.randn(8, 8, seed=i) for i in range(4)])  # a new signature: a new capture
    assert model.stats()["captures"] == 2


def test_eager_mode_and_capture_limit_fallback():
    eager = ts.compile(lambda x: x + x, mode="eager")
    for _ in range(2):
        assert eager(ts.zeros(2) + 1).tolist() == [2.0, 2.0]
    assert eager.stats() == {"captures": 0, "replays": 0, "eager_runs": 2,
                             "fell_back_to_eager": False}
    limited = ts.compile(lambda x: x * x, capture_limit=1)
    limited(ts.zeros(2))
    assert limited(ts.full([3], 3.0)).tolist() == [9.0, 9.0, 9.0]
    s = limited.stats()
    assert s["fell_back_to_eager"] and s["captures"] == 1 and s["eager_runs"] == 1
    assert ts.compile(lambda x: x).mode == "reduce-overhead"


def test_result_shape_is_kept_on_replay():
    single = ts.compile(lambda x: x + 1)
    as_list = ts.compile(lambda x: [x + 1, x + 2])
    for _ in range(2):  # capture, then replay
        assert isinstance(single(ts.zeros(2)), ts.Tensor)
        r = as_list(ts.zeros(2))
        assert isinstance(r, list) and [t.tolist() for t in r] == [[1.0, 1.0], [2.0, 2.0]]


def test_decorator_form():
    @ts.compile(mode="eager")
    def f(x):
        return ts.relu(x)

    assert f(ts.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]


def test_python_exception_inside_reaches_the_caller_unchanged_and_nothing_is_cached():
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        y = x + x
        if calls["n"] == 1:
            raise KeyError("boom from inside")
        return y

    f = ts.compile(flaky)
    with pytest.raises(KeyError, match="boom from inside") as info:
        f(ts.zeros(2))
    assert "flaky" in "".join(traceback.format_tb(info.value.__traceback__))
    assert f.stats()["captures"] == 0
    assert f(ts.zeros(2) + 1).tolist() == [2.0, 2.0]
    assert f.stats()["captures"] == 1
    ef = ts.compile(flaky, mode="eager")
    calls["n"] = 0
    with pytest.raises(KeyError):
        ef(ts.zeros(2))
    assert ef.stats()["eager_runs"] == 0


def test_tagstream_error_inside_keeps_its_class(tag):
    side = tag("race")

    def racy(x):
        y = x + x
        with ts.scope.stream_switch(side):
            return y @ x  # no event: a race (R4.8)

    for mode in ("reduce-overhead", "eager"):
        with pytest.raises(ts.DataRaceError):
            ts.compile(racy, mode=mode)(ts.zeros(2, 2))
    assert ts.scope.current_stream() == "default"


def test_bad_results_and_arguments_are_type_errors():
    with pytest.raises(TypeError, match="must return a Tensor"):
        ts.compile(lambda x: 3)(ts.zeros(1))
    with pytest.raises(TypeError, match="returned a int"):
        ts.compile(lambda x: (x, 3))(ts.zeros(1))
    f = ts.compile(lambda x: x + x)
    with pytest.raises(TypeError, match="argument 0"):
        f(np.zeros(2))
    with pytest.raises(TypeError, match="positional"):
        f(x=ts.zeros(1))
    with pytest.raises(ValueError, match="unknown mode"):
        ts.compile(lambda x: x, mode="max-autotune")


def test_a_recursive_call_is_refused_not_a_deadlock():
    holder = {}

    def f(x):
        return holder["f"](x)

    holder["f"] = ts.compile(f)
    with pytest.raises(RuntimeError, match="inside its own call"):
        holder["f"](ts.zeros(1))


def test_one_compiled_function_from_several_threads():
    f = ts.compile(lambda x, y: (x @ y + x, x * y))
    xs = [(ts.randn(16, 16, seed=i), ts.randn(16, 16, seed=50 + i)) for i in range(6)]
    results, errors = [None] * len(xs), []

    def work(i):
        try:
            for _ in range(5):
                out = f(*xs[i])
            results[i] = [o.numpy() for o in out]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors
    for (x, y), (r0, r1) in zip(xs, results):
        xn, yn = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
        np.testing.assert_allclose(r0, xn @ yn + xn, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(r1, xn * yn, rtol=1e-6)
    s = f.stats()
    assert s["captures"] == 1 and s["replays"] == 29
