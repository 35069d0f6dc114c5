"""edgectl: an agentless command-line toolkit and SSH fleet manager for edge devices.

`from edgectl import Fleet` gives a script everything the CLI can do.
"""

from edgectl.api import Fleet, ImportReport
from edgectl.errors import (
    ConflictError,
    EdgectlError,
    NotFoundError,
    StoreError,
    UsageError,
    ValidationError,
)
from edgectl.inventory.model import Node
from edgectl.inventory.selectors import Selector, parse_selector
from edgectl.status import ExitStatus

__version__ = "0.1.0"

__all__ = [
    "ConflictError",
    "EdgectlError",
    "ExitStatus",
    "Fleet",
    "ImportReport",
    "Node",
    "NotFoundError",
    "Selector",
    "StoreError",
    "UsageError",
    "ValidationError",
    "__version__",
    "parse_selector",
]
