"""Provisioning: playbooks of idempotent steps, applied over SSH in rolling batches.

    from edgectl import Fleet
    from edgectl.provision import provision
    report = provision(Fleet(), "ocr", "@cameras", serial=10, max_fail=20)

The pieces: `playbook` (schema and loader), `actions` (pure: check command -> plan),
`runner` (the only I/O), `report` (what happened, per node and step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from edgectl.inventory.model import Node
from edgectl.provision.playbook import Playbook, PlaybookError, Step, load_playbook
from edgectl.provision.report import NodeReport, ProvisionReport, StepResult
from edgectl.provision.runner import RunSettings

if TYPE_CHECKING:
    from edgectl.facts.store import ProbeResult
    from edgectl.transport import ConnectionPool

__all__ = [
    "NodeReport",
    "Playbook",
    "PlaybookError",
    "ProvisionReport",
    "RunSettings",
    "Step",
    "StepResult",
    "load_playbook",
    "provision",
]

Progress = Callable[[int], AbstractContextManager[Callable[[str], None]]]


class FleetAccess(Protocol):
    """What provisioning needs of a fleet (edgectl.Fleet has it all)."""

    def nodes(self, selector: str | Sequence[str] = ..., allow_empty: bool = ...) -> list[Node]:
        """The nodes a selector picks."""

    def facts(self) -> Any:
        """Latest facts per node name."""

    def pool(
        self, timeout: float | None = ..., forks: int = ..., accept_new: bool = ...
    ) -> ConnectionPool:
        """A connection pool for this fleet."""

    async def probe_async(
        self,
        nodes: Sequence[Node],
        pool: ConnectionPool,
        timeout: float | None = ...,
        on_done: Callable[[str], None] | None = ...,
        full: bool = ...,
    ) -> list[ProbeResult]:
        """Probe nodes and store their facts (`full`: static facts re-read, not cached)."""


def provision(
    fleet: FleetAccess,
    playbook: str | Playbook,
    selector: str | Sequence[str] = "all",
    *,
    check: bool = False,
    serial: int | None = None,
    max_fail: float | None = None,
    timeout: float = 30.0,
    forks: int = 100,
    accept_new: bool = False,
    change_timeout: float | None = None,
    progress: Progress | None = None,
) -> ProvisionReport:
    """Apply a playbook (path, shipped name or loaded) to the selected nodes.

    Every file change carries its diff (StepResult.diff); showing it is the caller's choice.
    `timeout` bounds connecting and each check; a change command gets `change_timeout`
    (default 600 s) unless its step sets `timeout`. After each batch (not under --check)
    the batch's reachable nodes are probed, so new capabilities show in their facts at once.
    """
    from edgectl.provision.runner import DEFAULT_CHANGE_TIMEOUT, Runner

    book = playbook if isinstance(playbook, Playbook) else load_playbook(playbook)
    if serial is not None and serial < 1:
        raise PlaybookError("--serial must be at least 1")
    if max_fail is not None and not 0 <= max_fail <= 100:
        raise PlaybookError("--max-fail is a percentage from 0 to 100")
    nodes = fleet.nodes(selector)
    settings = RunSettings(
        check=check,
        serial=serial,
        max_fail=max_fail,
        change_timeout=change_timeout or max(timeout, DEFAULT_CHANGE_TIMEOUT),
    )

    async def go() -> ProvisionReport:
        async with fleet.pool(timeout, forks, accept_new) as pool:
            runner = Runner(book, pool, fleet.facts(), settings)

            async def refresh(batch: list[Node]) -> None:
                # full: a playbook may have installed tesseract or languages just now.
                await fleet.probe_async(batch, pool, timeout, full=True)

            if progress is None:
                return await runner.run(nodes, refresh)
            with progress(len(nodes)) as advance:
                return await runner.run(nodes, refresh, advance)

    import asyncio  # kept out of start-up, as in the API

    return asyncio.run(go())
