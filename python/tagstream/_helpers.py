"""Python-side helpers of the native Tensor: repr and DLPack (numpy does the formatting and the
DLPack structs)."""

import numpy as np

from ._errors import NoGpuError, TagstreamError

_KDL_CPU = 1


def tensor_repr(t):
    """torch-like ``tensor([...], dtype=tagstream.float16)``; waits for the values."""
    extras = []
    if t.dtype.name != "float32":
        extras.append(f"dtype={t.dtype!r}")
    if t.device != "cpu":
        extras.append(f"device='{t.device}'")
    try:
        arr = t.numpy()
    except TagstreamError:
        # A graph value inside a capture has no values to show yet.
        shape = ", ".join(str(d) for d in t.shape)
        return f"tensor(<graph value>, shape=({shape}), dtype={t.dtype!r})"
    body = np.array2string(
        arr, separator=", ", prefix="tensor(", threshold=1000, edgeitems=3, precision=4
    )
    return "tensor(" + ", ".join([body, *extras]) + ")"


def dlpack(t, stream=None, max_version=None, dl_device=None, copy=None):
    """``Tensor.__dlpack__`` where no zero-copy export exists (``copy=True``, a tensor on a GPU):
    a fresh host copy exported through numpy's DLPack.

    The copy is marked read-only when the consumer speaks DLPack >= 1.0 (numpy >= 2.1 sets the
    flag); an older consumer gets a writable private copy, which tagstream never reads again.
    """
    if dl_device is not None and tuple(int(x) for x in dl_device) != (_KDL_CPU, 0):
        raise BufferError(f"tagstream can export to the CPU only, not to DLPack device {dl_device}")
    if copy is False:
        raise BufferError("a tagstream tensor cannot be exported without a copy")
    # `.numpy()` views a CPU tensor's memory: a copy asked for must be a real one.
    arr = np.array(t.numpy()) if copy else t.numpy()
    if max_version is not None:
        try:
            return arr.__dlpack__(max_version=max_version)
        except (BufferError, TypeError):
            pass
    return np.array(arr).__dlpack__()


def from_dlpack(obj):
    """A tagstream tensor from any DLPack producer on the CPU (see ``tagstream.from_dlpack``)."""
    from . import Tensor, tensor
    from ._native import _import_dlpack

    if isinstance(obj, Tensor):
        return obj
    device = getattr(obj, "__dlpack_device__", None)
    if device is not None:
        kind, index = (int(x) for x in device())
        if kind != _KDL_CPU:
            # CUDA (kDLCUDA = 2) producers need the CUDA backend's device buffers.
            raise NoGpuError(
                f"no GPU: the DLPack producer lives on device ({kind}, {index}); this build of the "
                "tagstream Python package imports DLPack from CPU producers only"
            )
    imported = _import_dlpack(obj)
    if isinstance(imported, Tensor):
        return imported
    # A dtype tagstream does not store (float64, int64, bool, ...): numpy reads the producer's
    # memory through the array interface and `tensor` converts (a copy, as before).
    return tensor(np.asarray(imported))
