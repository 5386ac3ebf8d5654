"""Exceptions: ``TagstreamError`` and one subclass per Rust ``tagstream::Error`` variant.

Each carries the Rust message as its only argument. ``ShapeMismatchError``,
``DTypeMismatchError``, ``UnknownDTypeError`` and ``InvalidValueError`` are also ``ValueError``s, ``OutOfMemoryError``
is also a ``MemoryError``.
"""

__all__ = [
    "TagstreamError",
    "TagInUseError",
    "InvalidTagError",
    "ShapeMismatchError",
    "DTypeMismatchError",
    "UnknownDTypeError",
    "DataRaceError",
    "WaitWithoutRecordError",
    "DeadlockError",
    "HostSyncInCaptureError",
    "UnbalancedStreamSwitchError",
    "ForeignGraphValueError",
    "NoGpuError",
    "DeviceMismatchError",
    "UnknownDeviceError",
    "ThreadExitingError",
    "ExecutionFailedError",
    "OutOfMemoryError",
    "WorkerSpawnError",
    "InvalidValueError",
]


class TagstreamError(Exception):
    """Base class of every error tagstream raises; ``str(e)`` is the Rust message."""


class TagInUseError(TagstreamError):
    """``create_tagged_event`` with a tag already created in this process (R1.2)."""


class InvalidTagError(TagstreamError):
    """An empty tag (R1.5, R2.10)."""


class ShapeMismatchError(TagstreamError, ValueError):
    """Operands whose shapes do not fit the op, or a size that overflows."""


class DTypeMismatchError(TagstreamError, ValueError):
    """Operands of different dtypes."""


class UnknownDTypeError(TagstreamError, ValueError):
    """A dtype name tagstream does not know (``float64``, ``int64``, ...)."""


class DataRaceError(TagstreamError):
    """A cross-stream read that no tagged event orders (R3.5)."""


class WaitWithoutRecordError(TagstreamError):
    """A wait in a captured graph with no earlier record of its event (R4.6)."""


class DeadlockError(TagstreamError):
    """A cycle in a captured graph's plan (R4.7)."""


class HostSyncInCaptureError(TagstreamError):
    """A host read (``.numpy()``, ``print``, ``synchronize``) inside a capture (R4.3)."""


class UnbalancedStreamSwitchError(TagstreamError):
    """Stream scopes left out of order, left open, or left on another thread (R2.8)."""


class ForeignGraphValueError(TagstreamError):
    """A value of a captured graph used outside the capture that made it."""


class NoGpuError(TagstreamError):
    """A CUDA device was asked for where none can be used."""


class DeviceMismatchError(TagstreamError):
    """Operands on two devices (R10.1), or a capture whose inputs are on two devices (R10.7)."""


class UnknownDeviceError(TagstreamError, ValueError):
    """A device name that is not ``cpu``, ``cuda`` or ``cuda:N``."""


class ThreadExitingError(TagstreamError):
    """A scope or compiled call made while the thread's tagstream state is being destroyed."""


class ExecutionFailedError(TagstreamError):
    """An entry failed on a stream worker (a tagstream bug, reported instead of a crash), or a
    compiled Python function raised something that is not itself re-raisable."""


class OutOfMemoryError(TagstreamError, MemoryError):
    """The allocator refused a tensor's or a graph's memory."""


class WorkerSpawnError(TagstreamError):
    """The OS refused to start a stream worker thread."""


class InvalidValueError(TagstreamError, ValueError):
    """A value an ``int32`` tensor cannot hold exactly (not an integer, out of range, or beyond
    float32's exact integers: int32 data passes through float32), or ``randn`` of ``int32``
    (R6.1)."""
