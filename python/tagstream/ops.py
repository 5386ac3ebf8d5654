"""Tagged events (torchair's ``npu_*`` names and the same without ``npu_``) and the tensor ops.

Events order work across streams::

    ev = ops.create_tagged_event("66")      # once per process: a second "66" is TagInUseError
    a = ops.add(x, y)                       # on the current stream
    ops.tagged_event_record(ev)             # recorded after `a` on the current stream
    with scope.stream_switch("1"):
        ops.tagged_event_wait(ev)           # stream "1" waits for that record
        b = a @ w                           # so reading `a` here is ordered
    # Reading `a` on "1" without the wait raises DataRaceError before anything runs.

Ops return at once (asynchronous); shapes and dtypes are checked before anything is enqueued.
"""

from ._native import (
    TaggedEvent,
    add,
    create_tagged_event,
    div,
    exp,
    gelu,
    matmul,
    mm,
    mul,
    record_tagged_stream,
    relu,
    rms_norm,
    silu,
    softmax,
    sub,
    tagged_event_record,
    tagged_event_wait,
    to_dtype,
)

#: torchair's name of :func:`create_tagged_event`.
npu_create_tagged_event = create_tagged_event
#: torchair's name of :func:`tagged_event_record`.
npu_tagged_event_record = tagged_event_record
#: torchair's name of :func:`tagged_event_wait`.
npu_tagged_event_wait = tagged_event_wait
#: torchair's name of :func:`record_tagged_stream`.
npu_record_tagged_stream = record_tagged_stream

__all__ = [
    "TaggedEvent",
    "create_tagged_event", "tagged_event_record", "tagged_event_wait", "record_tagged_stream",
    "npu_create_tagged_event", "npu_tagged_event_record", "npu_tagged_event_wait",
    "npu_record_tagged_stream",
    "add", "sub", "mul", "div", "mm", "matmul", "relu", "silu", "gelu", "exp", "softmax",
    "rms_norm", "to_dtype",
]
