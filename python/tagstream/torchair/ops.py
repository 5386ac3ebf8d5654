"""torchair.ops: the tagged-event API (``npu_create_tagged_event`` and friends)."""

from tagstream.ops import *  # noqa: F401,F403
from tagstream.ops import __all__  # noqa: F401
