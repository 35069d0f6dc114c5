"""Ad-hoc commands on many nodes (`edgectl run`), and grouping of identical outputs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgectl.inventory.model import Node
from edgectl.transport import Connection, ConnectionPool, TransportError


@dataclass
class CommandOutcome:
    """One node's result of an ad-hoc command, or why it could not run."""

    name: str
    exit_status: int | None
    stdout: str
    stderr: str
    duration: float
    truncated: bool = False
    reason: str | None = None  # set when the node was not reached (timeout, auth, ...)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Reached, exited 0, output complete."""
        return self.reason is None and self.exit_status == 0 and not self.truncated

    def to_dict(self) -> dict[str, Any]:
        """The `--json` shape of one node's result."""
        return {
            "name": self.name,
            "exit_status": self.exit_status,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration": round(self.duration, 4),
            "truncated": self.truncated,
            "reason": self.reason,
            "error": self.error,
        }


async def run_command(
    nodes: Sequence[Node],
    argv: Sequence[str],
    pool: ConnectionPool,
    timeout: float | None = None,
    max_output: int | None = None,
    on_done: Callable[[str], None] | None = None,
) -> list[CommandOutcome]:
    """Run argv on every node; return one outcome per node, in the order given."""

    async def one(node: Node, conn: Connection) -> CommandOutcome:
        result = await conn.run(argv, timeout=timeout, max_output=max_output)
        return CommandOutcome(
            node.name,
            result.exit_status,
            result.stdout_text,
            result.stderr_text,
            result.duration,
            result.truncated,
        )

    started = time.perf_counter()
    outcomes = await pool.run_all(nodes, one, on_done)
    results = []
    for node in nodes:
        outcome = outcomes[node.name]
        if isinstance(outcome, TransportError):
            elapsed = time.perf_counter() - started
            results.append(
                CommandOutcome(
                    node.name, None, "", "", elapsed, reason=outcome.reason, error=str(outcome)
                )
            )
        else:
            results.append(outcome)
    return results


def group_outputs(outcomes: Sequence[CommandOutcome]) -> list[tuple[list[str], CommandOutcome]]:
    """Nodes that gave identical output and status, grouped (largest group first)."""
    groups: dict[tuple[Any, ...], list[CommandOutcome]] = {}
    for outcome in outcomes:
        key = (
            outcome.reason,
            outcome.exit_status,
            outcome.stdout,
            outcome.stderr,
            outcome.truncated,
        )
        groups.setdefault(key, []).append(outcome)
    ordered = sorted(groups.values(), key=lambda members: (-len(members), members[0].name))
    return [([m.name for m in members], members[0]) for members in ordered]
