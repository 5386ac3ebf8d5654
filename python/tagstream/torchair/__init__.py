"""A drop-in face for the parts of ``torchair`` the seed program uses: ``ops`` (tagged events),
``scope`` (``npu_stream_switch``), ``get_npu_backend(compiler_config=...)``,
``configs.compiler_config.CompilerConfig`` and ``core.utils.logger``."""

from . import configs, core, ops, scope  # noqa: F401
from .configs.compiler_config import CompilerConfig


class NpuBackend:
    """What ``get_npu_backend`` returns: ``tagstream.torch.compile`` reads its ``mode``."""

    def __init__(self, compiler_config):
        self.compiler_config = compiler_config

    @property
    def mode(self):
        return self.compiler_config.mode

    def __call__(self, *args, **kwargs):
        raise TypeError("pass this backend to tagstream.torch.compile(model, backend=...)")

    def __repr__(self):
        return f"NpuBackend(mode={self.mode!r})"


def get_npu_backend(*, compiler_config=None, custom_decompositions=None):
    """A backend for ``tagstream.torch.compile`` with ``compiler_config.mode``."""
    return NpuBackend(compiler_config if compiler_config is not None else CompilerConfig())


__all__ = ["ops", "scope", "configs", "core", "CompilerConfig", "get_npu_backend", "NpuBackend"]
