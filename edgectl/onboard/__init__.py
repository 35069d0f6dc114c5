"""Bulk onboarding: from addresses to managed nodes.

discover   addresses -> the (host, port) pairs that answer with an SSH banner
bootstrap  one password login per node -> edgectl's public key in ~/.ssh/authorized_keys,
           the host key recorded, the node's `key` set, and a key-only login proven
"""

from edgectl.onboard.bootstrap import INSTALL_KEY, BootstrapResult, bootstrap
from edgectl.onboard.discover import Discovered, discover
from edgectl.onboard.ranges import Target, expand_range, node_name, read_targets

__all__ = [
    "INSTALL_KEY",
    "BootstrapResult",
    "Discovered",
    "Target",
    "bootstrap",
    "discover",
    "expand_range",
    "node_name",
    "read_targets",
]
