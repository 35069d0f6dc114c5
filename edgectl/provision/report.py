"""What a provisioning run did, per node and step: the data behind the tables and --json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Step statuses: ok (nothing to change), changed (changed, or would under --check),
# failed (why), skipped (does not apply, or not reached).
# Node statuses: ok, changed, failed (a step failed), unreachable (why), skipped (the run
# stopped before the node's batch, see ProvisionReport.stopped).
NODE_FAILURES = ("failed", "unreachable")


@dataclass
class StepResult:
    """One step on one node."""

    name: str
    action: str
    status: str  # ok | changed | failed | skipped
    message: str = ""
    changes: list[str] = field(default_factory=list)
    diff: str | None = None
    duration: float = 0.0

    def to_dict(self, with_diff: bool = False) -> dict[str, Any]:
        """The --json shape of a step."""
        record: dict[str, Any] = {
            "name": self.name,
            "action": self.action,
            "status": self.status,
            "message": self.message,
            "changes": list(self.changes),
            "duration": round(self.duration, 3),
        }
        if with_diff:
            record["diff"] = self.diff
        return record


@dataclass
class NodeReport:
    """One node's run: its steps, and how it ended."""

    name: str
    status: str = "ok"  # ok | changed | failed | unreachable | skipped
    reason: str | None = None  # for unreachable: the transport's reason (timeout, auth, ...)
    error: str | None = None  # why it failed, was unreachable or skipped
    batch: int | None = None  # 1-based batch number; None when never started
    clock_skew: float | None = None
    steps: list[StepResult] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        """True for ok and changed."""
        return self.status in ("ok", "changed")

    @property
    def failed(self) -> bool:
        """True for failed and unreachable (what --max-fail counts)."""
        return self.status in NODE_FAILURES

    def count(self, status: str) -> int:
        """How many steps ended with this status."""
        return sum(step.status == status for step in self.steps)

    def finish(self) -> None:
        """Derive the node's status from its steps (first failure gives the reason)."""
        for step in self.steps:
            if step.status == "failed":
                self.status = "failed"
                self.error = f"step {step.name!r}: {step.message}"
                return
        self.status = "changed" if self.count("changed") else "ok"

    def to_dict(self, with_diff: bool = False) -> dict[str, Any]:
        """The --json shape of a node."""
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "batch": self.batch,
            "clock_skew": self.clock_skew,
            "steps": [step.to_dict(with_diff) for step in self.steps],
        }


@dataclass
class ProvisionReport:
    """A whole run: every node selected, in inventory order, and whether it stopped early."""

    playbook: str
    path: str
    check: bool
    serial: int | None
    max_fail: float | None
    nodes: list[NodeReport] = field(default_factory=list)
    stopped: str | None = None  # why later batches did not run
    refreshed: list[str] = field(default_factory=list)  # nodes whose facts were re-probed
    refresh_error: str | None = None  # why facts could not be refreshed, if they could not

    @property
    def succeeded(self) -> int:
        """Nodes that ended ok or changed."""
        return sum(node.succeeded for node in self.nodes)

    def summary(self) -> dict[str, int]:
        """Counts of node statuses, and of changed and failed steps."""
        counts = {
            status: sum(n.status == status for n in self.nodes)
            for status in ("ok", "changed", "failed", "unreachable", "skipped")
        }
        counts["nodes"] = len(self.nodes)
        counts["steps_changed"] = sum(n.count("changed") for n in self.nodes)
        counts["steps_failed"] = sum(n.count("failed") for n in self.nodes)
        return counts

    def failures(self) -> list[NodeReport]:
        """The nodes that failed or were unreachable, with why."""
        return [node for node in self.nodes if node.failed]

    def to_dict(self, with_diff: bool = False) -> dict[str, Any]:
        """The --json document of a run."""
        return {
            "playbook": self.playbook,
            "path": self.path,
            "check": self.check,
            "serial": self.serial,
            "max_fail": self.max_fail,
            "stopped": self.stopped,
            "summary": self.summary(),
            "nodes": [node.to_dict(with_diff) for node in self.nodes],
            "refreshed": list(self.refreshed),
            "refresh_error": self.refresh_error,
        }
