"""Stream scopes as context managers, tagged events, threads."""

import threading

import numpy as np
import pytest

import tagstream as ts


def test_stream_switch_is_a_nesting_context_manager(tag):
    s1, s2 = tag("s1"), tag("s2")
    assert ts.scope.current_stream() == "default"
    with ts.scope.stream_switch(s1) as scope:
        assert scope.tag == s1 and ts.scope.current_stream() == s1
        with ts.scope.npu_stream_switch(s2):
            assert ts.scope.current_stream() == s2
        assert ts.scope.current_stream() == s1
    assert ts.scope.current_stream() == "default"


def test_exception_in_a_scope_leaves_it(tag):
    with pytest.raises(KeyError):
        with ts.scope.stream_switch(tag("exc")):
            raise KeyError("x")
    assert ts.scope.current_stream() == "default"


def test_a_scope_object_can_be_reused(tag):
    s = ts.scope.stream_switch(tag("reuse"))
    for _ in range(3):
        with s:
            assert ts.scope.current_stream() == s.tag
    assert ts.scope.current_stream() == "default"


def test_events_order_a_cross_stream_read_and_values_match_numpy(tag):
    ev = ts.ops.npu_create_tagged_event(tag("ev"))
    side = tag("side")
    x_np = np.random.default_rng(5).standard_normal((32, 32)).astype(np.float32)
    x = ts.tensor(x_np)
    a = x + x
    ts.ops.npu_tagged_event_record(ev)
    with ts.scope.npu_stream_switch(side):
        ts.ops.npu_tagged_event_wait(ev)
        b = a @ x
        ts.ops.npu_record_tagged_stream(a, side)
    c = a @ x  # main stream, overlaps b
    ts.synchronize()
    np.testing.assert_allclose(b.numpy(), (2 * x_np) @ x_np, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(b.numpy(), c.numpy())


def test_each_thread_has_its_own_scopes_and_ops_from_threads_agree(tag):
    side = tag("threads")
    results, errors = {}, []
    barrier = threading.Barrier(4)

    def work(i):
        try:
            assert ts.scope.current_stream() == "default"
            barrier.wait()
            x = ts.randn(16, 16, seed=i)
            with ts.scope.stream_switch(f"{side}-{i}"):
                assert ts.scope.current_stream() == f"{side}-{i}"
                y = ts.randn(16, 16, seed=100 + i)
                z = y @ y + y
            results[i] = (x + x).numpy(), z.numpy()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    with ts.scope.stream_switch(side):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert ts.scope.current_stream() == side  # other threads' scopes did not touch ours
    assert not errors, errors
    for i, (xx, z) in results.items():
        x = ts.randn(16, 16, seed=i).numpy()
        y = ts.randn(16, 16, seed=100 + i).numpy().astype(np.float64)
        np.testing.assert_array_equal(xx, 2 * x)
        np.testing.assert_allclose(z, y @ y + y, rtol=1e-4, atol=1e-4)
