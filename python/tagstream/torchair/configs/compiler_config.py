"""torchair.configs.compiler_config."""

import types

__all__ = ["CompilerConfig"]


class CompilerConfig:
    """torchair's compiler configuration; tagstream reads ``mode``.

    ``mode = "reduce-overhead"`` captures and replays (aclgraph's role); torchair's default
    ``"max-autotune"`` runs eagerly on tagstream's streams (tagstream has no GE graph compiler).
    """

    def __init__(self):
        self.mode = "max-autotune"
        self.debug = types.SimpleNamespace()
        self.experimental_config = types.SimpleNamespace()

    def __repr__(self):
        return f"CompilerConfig(mode={self.mode!r})"
