"""torchair.scope: ``npu_stream_switch`` as a ``with`` context manager."""

from tagstream.scope import *  # noqa: F401,F403
from tagstream.scope import __all__  # noqa: F401
