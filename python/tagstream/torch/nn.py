"""``torch.nn`` as far as the seed program uses it: ``Module`` with ``forward`` called by
``__call__``."""

__all__ = ["Module"]


class Module:
    """A model: subclass it and define ``forward``; calling the module calls ``forward``."""

    def __init__(self):
        pass

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    # torch's chaining no-ops: there are no parameters or training state to move or switch.
    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def to(self, *args, **kwargs):
        return self

    def npu(self, device=None):
        return self

    def cuda(self, device=None):
        return self

    def cpu(self):
        return self
