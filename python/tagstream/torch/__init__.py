"""A drop-in face for the parts of ``torch`` the seed program uses.

``import tagstream.torch as torch`` gives ``torch.randn`` (a process-wide generator, reset by
``manual_seed``), ``torch.add``/``mm``/..., the index ops (``topk``, ``gather``, ``scatter``, ``index_select``,
with int32 indices where torch has int64), the dtypes, ``torch.nn.Module`` and
``torch.compile(model, backend=..., mode=..., dynamic=..., fullgraph=...)``. Tensors are
``tagstream.Tensor``; ``.npu()`` moves one to the default accelerator (CUDA when available, else
it stays on the CPU).
"""

import contextlib as _contextlib
import types as _types

import tagstream as _ts
from tagstream import (  # noqa: F401
    Tensor,
    add,
    bfloat16,
    cat,
    div,
    exp,
    float16,
    float32,
    from_dlpack,
    from_numpy,
    full,
    gather,
    gelu,
    index_select,
    int32,
    manual_seed,
    matmul,
    mm,
    mul,
    relu,
    rms_norm,
    scatter,
    silu,
    softmax,
    sub,
    synchronize,
    tensor,
    topk,
    zeros,
)

from . import nn  # noqa: F401

float = float32  # noqa: A001  (torch's aliases)
half = float16
int = int32  # noqa: A001


def randn(*size, dtype=None, device=None, generator=None, requires_grad=False):
    """Standard-normal samples from the process-wide generator (``manual_seed`` resets it)."""
    if generator is not None or requires_grad:
        raise NotImplementedError("tagstream.torch.randn: generator= and requires_grad= are not supported")
    return _ts.randn(*size, dtype=dtype, device=device)


def no_grad():
    """tagstream has no autograd; a context manager that does nothing."""
    return _contextlib.nullcontext()


def compile(model=None, *, fullgraph=False, dynamic=None, backend="inductor", mode=None,
            options=None, disable=False):
    """``torch.compile``: a ``tagstream.Compiled`` over ``model`` (any callable, e.g. an
    ``nn.Module``).

    The mode comes from ``backend`` when it is a ``torchair.get_npu_backend(...)`` backend
    (its ``CompilerConfig.mode``), else from ``mode``. ``"reduce-overhead"`` captures and
    replays; every other mode (torch's default, torchair's ``"max-autotune"``) runs eagerly on
    tagstream's streams. ``fullgraph`` and ``dynamic`` are accepted: a tagstream capture is
    always a full graph per input signature.
    """
    if model is None:
        return lambda m: compile(m, fullgraph=fullgraph, dynamic=dynamic, backend=backend,
                                 mode=mode, options=options, disable=disable)
    if disable:
        return model
    chosen = getattr(backend, "mode", None) or mode
    return _ts.compile(model, mode="reduce-overhead" if chosen == "reduce-overhead" else "eager")


def _device_namespace(name):
    ns = _types.SimpleNamespace()
    ns.is_available = _ts.cuda_is_available
    ns.synchronize = lambda device=None: _ts.synchronize()
    ns.device_count = lambda: 1 if _ts.cuda_is_available() else 0
    ns.__name__ = f"tagstream.torch.{name}"
    return ns


cuda = _device_namespace("cuda")
npu = _device_namespace("npu")
