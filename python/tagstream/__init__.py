"""tagstream: a multi-stream tensor runtime with tagged events and capture/replay.

The native API (``tagstream.compile(fn, mode=...)``, ``tagstream.add``, ``tagstream.ops``,
``tagstream.scope``) is the main one; ``tagstream.torch`` and ``tagstream.torchair`` are drop-in
faces for programs written against torch + torchair (see ``examples/seed.py``).

Tensors are immutable and asynchronous: ops return at once, and ``.numpy()``, ``repr()`` and
``synchronize()`` wait, with the GIL released. numpy and DLPack data are copied in and out
(the Rust API exposes no buffer to share); see README.md.
"""

from . import _errors
from ._errors import *  # noqa: F401,F403  (the pinned exception classes)
from ._native import (
    Compiled,
    StreamSwitch,
    TaggedEvent,
    Tensor,
    add,
    bfloat16,
    cuda_is_available,
    div,
    dtype,
    exp,
    float16,
    float32,
    from_numpy,
    full,
    gather,
    gelu,
    index_select,
    int32,
    manual_seed,
    matmul,
    max,
    mean,
    mm,
    mul,
    randn,
    relu,
    rms_norm,
    scatter,
    silu,
    softmax,
    cat,
    sub,
    sum,
    synchronize,
    tensor,
    to_dtype,
    topk,
    zeros,
)
from ._native import _compile
from . import ops, scope

__version__ = "0.1.0"


def compile(fn=None, *, mode="reduce-overhead", capture_limit=64):
    """Compile ``fn`` (tensors in, a tensor or a tuple/list of tensors out).

    ``mode="reduce-overhead"`` (default) captures ``fn`` once per input signature (shapes and
    dtypes) into a multi-stream graph, checks it (races, waits without records, cycles) and
    replays it on later calls; ``mode="eager"`` calls ``fn`` every time. Past ``capture_limit``
    signatures every call runs eagerly. The result has ``.stats()``: ``captures``, ``replays``,
    ``eager_runs``, ``fell_back_to_eager``. An exception raised by ``fn`` reaches the caller
    unchanged; nothing is cached then. Usable as a decorator: ``@tagstream.compile(mode=...)``.
    """
    if fn is None:
        return lambda f: _compile(f, mode, capture_limit)
    return _compile(fn, mode, capture_limit)


def from_dlpack(obj):
    """A tensor from a DLPack producer (``torch.Tensor``, ``numpy.ndarray``, ...) on the CPU.

    A C-contiguous, aligned float32, float16, bfloat16 or int32 producer is not copied: the
    tensor reads the producer's memory (keeping it alive until the last op reading it ran), so
    **the producer must not be written while tagstream may use it**. Other layouts are copied;
    other dtypes are converted as ``tagstream.tensor`` does (float64 to float32, integers to
    int32). A CUDA producer raises ``NoGpuError``.
    """
    from ._helpers import from_dlpack as _from_dlpack

    return _from_dlpack(obj)


__all__ = [
    "Tensor", "dtype", "float32", "float16", "bfloat16", "int32",
    "tensor", "from_numpy", "from_dlpack", "zeros", "full", "randn", "manual_seed",
    "add", "sub", "mul", "div", "mm", "matmul", "relu", "silu", "gelu", "exp", "softmax",
    "cat", "rms_norm", "sum", "mean", "max", "topk", "gather", "scatter", "index_select",
    "to_dtype", "compile", "Compiled", "synchronize", "cuda_is_available",
    "TaggedEvent", "StreamSwitch", "ops", "scope",
    *_errors.__all__,
]
