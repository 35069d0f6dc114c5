"""`inventory discover`: find SSH servers among the given addresses, add them to the inventory.

Only the addresses given are contacted, concurrently and bounded (a semaphore, a timeout per
address, a cap on the range).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgectl.errors import UsageError
from edgectl.inventory.model import DEFAULT_PORT, Node, check_name, check_port, check_user
from edgectl.onboard.ranges import Target, node_name, read_targets

if TYPE_CHECKING:
    from edgectl.api import Fleet

DEFAULT_CONCURRENCY = 256
DEFAULT_SCAN_TIMEOUT = 2.0


@dataclass
class Discovered:
    """An SSH server that answered, and what became of it in the inventory."""

    host: str
    port: int
    banner: str
    name: str  # the generated node name
    state: str = "found"  # found | added | known (already in the inventory) | taken (name used)
    known_as: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The --json shape."""
        return {
            "host": self.host,
            "port": self.port,
            "banner": self.banner,
            "name": self.name,
            "state": self.state,
            "known_as": self.known_as,
        }


async def scan(
    targets: Sequence[Target],
    timeout: float = DEFAULT_SCAN_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[tuple[Target, str]]:
    """Knock on every target, at most `concurrency` at once; those that spoke SSH, in order."""
    from edgectl.transport import check_nofile
    from edgectl.transport.banner import read_banner

    if concurrency < 1:
        raise UsageError("concurrency must be at least 1")
    check_nofile(concurrency)
    limit = asyncio.Semaphore(concurrency)

    async def one(target: Target) -> str | None:
        async with limit:
            return await read_banner(target.host, target.port, timeout)

    banners = await asyncio.gather(*(one(t) for t in targets))
    return [(t, b) for t, b in zip(targets, banners, strict=True) if b is not None]


def discover(
    fleet: Fleet,
    range_or_file: str,
    ports: Sequence[int] = (DEFAULT_PORT,),
    *,
    timeout: float = DEFAULT_SCAN_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
    add: bool = False,
    group: str | None = None,
    user: str | None = None,
) -> list[Discovered]:
    """Find SSH servers in a range; with `add`, put the new ones in the inventory (one write)."""
    targets = read_targets(range_or_file, [check_port(p) for p in ports])
    if group is not None:
        check_name(group, "group name")
    if user is not None:
        check_user(user)
    answered = asyncio.run(scan(targets, timeout, concurrency))
    existing = {(n.host, n.port): n.name for n in fleet.inventory.nodes()}
    taken = set(existing.values())
    found = []
    fresh: list[Node] = []
    for target, banner in answered:
        item = Discovered(target.host, target.port, banner, node_name(target.host, target.port))
        if (target.host, target.port) in existing:
            item.state, item.known_as = "known", existing[(target.host, target.port)]
        elif add and item.name in taken:
            item.state = "taken"
        elif add:
            groups = [group] if group else []
            fresh.append(Node(item.name, target.host, target.port, user=user, groups=groups))
            item.state = "added"
            taken.add(item.name)
        found.append(item)
    if fresh:
        fleet.add_nodes(fresh)
    return found
