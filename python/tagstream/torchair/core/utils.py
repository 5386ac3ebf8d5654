"""torchair.core.utils: ``logger``."""

import logging

__all__ = ["logger"]

#: The logger torchair programs import.
logger = logging.getLogger("tagstream.torchair")
