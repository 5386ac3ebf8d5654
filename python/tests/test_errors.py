"""Every Rust error arrives as its pinned exception class with the Rust message; no argument
from Python crashes the interpreter."""

import threading

import numpy as np
import pytest

import tagstream as ts


def test_class_hierarchy():
    for name in ["TagInUseError", "InvalidTagError", "DataRaceError", "WaitWithoutRecordError",
                 "DeadlockError", "HostSyncInCaptureError", "UnbalancedStreamSwitchError",
                 "ForeignGraphValueError", "NoGpuError", "DeviceMismatchError",
                 "ExecutionFailedError", "OutOfMemoryError", "WorkerSpawnError",
                 "ShapeMismatchError", "DTypeMismatchError", "UnknownDTypeError",
                 "InvalidValueError"]:
        assert issubclass(getattr(ts, name), ts.TagstreamError), name
    assert issubclass(ts.ShapeMismatchError, ValueError)
    assert issubclass(ts.DTypeMismatchError, ValueError)
    assert issubclass(ts.InvalidValueError, ValueError)
    assert issubclass(ts.OutOfMemoryError, MemoryError)


def test_tag_in_use_and_invalid_tag(tag):
    t = tag("dup")
    ev = ts.ops.create_tagged_event(t)
    assert ev.tag == t
    with pytest.raises(ts.TagInUseError, match=f'tag "{t}" is already in use'):
        ts.ops.npu_create_tagged_event(tag=t)
    with pytest.raises(ts.InvalidTagError, match="empty"):
        ts.ops.create_tagged_event("")
    with pytest.raises(ts.InvalidTagError):
        with ts.scope.stream_switch(""):
            pass
    assert ts.scope.current_stream() == "default"


def test_shape_and_dtype_mismatch_are_value_errors():
    a = ts.zeros(2, 3)
    with pytest.raises(ts.ShapeMismatchError, match=r"add: shape mismatch between \[2, 3\] and \[3, 2\]"):
        a + ts.zeros(3, 2)
    with pytest.raises(ValueError):
        a @ a
    with pytest.raises(ts.DTypeMismatchError, match="add: dtype mismatch"):
        a + ts.zeros(2, 3, dtype=ts.float16)
    with pytest.raises(ts.UnknownDTypeError, match="unknown dtype"):
        ts.zeros(2, dtype="float64")


def test_sizes_that_overflow_or_cannot_be_allocated():
    with pytest.raises(ts.ShapeMismatchError, match="overflows"):
        ts.zeros(1 << 40, 1 << 40)
    with pytest.raises(ts.OutOfMemoryError, match="out of memory"):
        ts.zeros(1 << 44)  # 64 TiB
    with pytest.raises(MemoryError):
        ts.full([1 << 44], 1.0)


def test_data_race_names_both_streams(tag):
    x = ts.randn(8, 8, seed=1)
    a = x + x  # on "default"
    side = tag("race")
    with pytest.raises(ts.DataRaceError, match=f'stream "{side}" reads the output of add'):
        with ts.scope.stream_switch(side):
            a @ x
    assert ts.scope.current_stream() == "default"


def test_capture_errors_map_to_their_classes(tag):
    ev = ts.ops.create_tagged_event(tag("never-recorded"))
    side = tag("side")

    def waits_without_record(x):
        with ts.scope.stream_switch(side):
            ts.ops.tagged_event_wait(ev)
            y = x + x
        return y

    with pytest.raises(ts.WaitWithoutRecordError, match="no earlier record"):
        ts.compile(waits_without_record)(ts.zeros(2))

    def reads_host(x):
        y = x + x
        y.numpy()
        return y

    with pytest.raises(ts.HostSyncInCaptureError, match="host read"):
        ts.compile(reads_host)(ts.zeros(2))

    def syncs(x):
        ts.synchronize()
        return x + x

    with pytest.raises(ts.HostSyncInCaptureError):
        ts.compile(syncs)(ts.zeros(2))

    leaked = []

    def leaks(x):
        y = x + x
        leaked.append(y)
        return y

    ts.compile(leaks)(ts.zeros(2))
    with pytest.raises(ts.ForeignGraphValueError):
        leaked[0] + ts.zeros(2)
    with pytest.raises(ts.ForeignGraphValueError):
        leaked[0].numpy()
    assert "graph value" in repr(leaked[0])


def test_scope_left_open_in_a_capture_is_unbalanced(tag):
    side = tag("open")

    def leaves_open(x):
        ts.scope.stream_switch(side).__enter__()
        return x + x

    with pytest.raises(ts.UnbalancedStreamSwitchError, match="still open"):
        ts.compile(leaves_open)(ts.zeros(2))
    assert ts.scope.current_stream() == "default"
    assert (ts.zeros(2) + 1).tolist() == [1.0, 1.0]


def test_out_of_order_exit_raises_on_the_next_call(tag):
    a, b = ts.scope.stream_switch(tag("a")), ts.scope.stream_switch(tag("b"))
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)  # out of order (R2.8): scopes cleared, error pending
    assert ts.scope.current_stream() == "default"
    with pytest.raises(ts.UnbalancedStreamSwitchError, match="dropped while"):
        ts.zeros(1)
    b.__exit__(None, None, None)  # inert now
    assert ts.zeros(1).tolist() == [0.0]


def test_leaving_a_scope_on_another_thread_is_an_error_not_a_crash(tag):
    s = ts.scope.stream_switch(tag("thread"))
    s.__enter__()
    errors = []

    def other():
        try:
            s.__exit__(None, None, None)
        except ts.UnbalancedStreamSwitchError as e:
            errors.append(e)

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert len(errors) == 1 and "thread that entered it" in str(errors[0])
    assert ts.scope.current_stream() == s.tag  # still open here
    s.__exit__(None, None, None)
    assert ts.scope.current_stream() == "default"
    with pytest.raises(ts.UnbalancedStreamSwitchError, match="without being entered"):
        s.__exit__(None, None, None)


BAD = [None, "x", 2.5, -1, 1 << 70, object(), [1, [2]], {"a": 1}, np.array(["a"]),
       np.array([True]), np.zeros((2, 2), np.complex64), (1, -2), [[1.0, 2.0], [3.0]], b"\x00"]


def _callables():
    t = ts.zeros(2, 2)
    ev = None
    return [
        ts.tensor, ts.from_numpy, ts.from_dlpack, ts.zeros, ts.randn,
        lambda a: ts.full(a, 1.0), lambda a: ts.full((2,), a), lambda a: ts.add(t, a),
        lambda a: ts.add(a, t), lambda a: ts.mm(t, a), lambda a: ts.matmul(a, t), ts.relu,
        ts.softmax, lambda a: ts.rms_norm(t, a), lambda a: ts.to_dtype(t, a),
        lambda a: t.to(a), lambda a: t + a, lambda a: t @ a, lambda a: t / a, lambda a: t.cuda(a),
        ts.ops.create_tagged_event, ts.ops.tagged_event_record, ts.ops.tagged_event_wait,
        lambda a: ts.ops.record_tagged_stream(t, a), lambda a: ts.ops.record_tagged_stream(a, "x"),
        lambda a: ts.scope.stream_switch(a).__enter__(), ts.compile,
        lambda a: ts.compile(lambda x: x, mode=a), lambda a: ts.compile(lambda x: x)(a),
        lambda a: ts.zeros(2, dtype=a), lambda a: ts.randn(2, seed=a), ts.manual_seed,
        lambda a: ts.tensor(a, dtype=ts.float16), lambda a: t.size(a), ev,
    ]


def test_fuzz_argument_conversions_raise_python_exceptions():
    raised = 0
    for f in _callables():
        if f is None:
            continue
        for bad in BAD:
            try:
                r = f(bad)
            except Exception as e:  # noqa: BLE001  (any Exception is fine; a crash or a
                raised += 1         # BaseException such as pyo3's PanicException is not)
                assert not isinstance(e, SystemError), (f, bad, e)
            else:
                if isinstance(r, ts.StreamSwitch):  # entered a scope named by a str
                    r.__exit__(None, None, None)
    assert raised > 300
    assert ts.scope.current_stream() == "default"
