"""torchair.core."""

from . import utils  # noqa: F401
