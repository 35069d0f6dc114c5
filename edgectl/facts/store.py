"""facts.json: the latest facts per node and a bounded history, one write per probe round.

Kept apart from the inventory so that a cron probe every minute never rewrites (or
risks) the inventory, and the history is capped per node so the file stays small.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgectl.store import Store

FILE = "facts"
LATEST = "latest"
HISTORY = "history"
HISTORY_LIMIT = 60  # samples per node: an hour of minute-by-minute probes
SAMPLE_FIELDS = (
    "probed_at",
    "reachable",
    "load1",
    "mem_available",
    "disk_free",
    "temp_c",
    "rtt_ms",
)


@dataclass
class ProbeResult:
    """One node's outcome of a probe: facts when reachable, else a reason."""

    name: str
    reachable: bool
    reason: str | None = None
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    probed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The `--json` shape: name, reachable, reason, facts (plus error text)."""
        return {
            "name": self.name,
            "reachable": self.reachable,
            "reason": self.reason,
            "error": self.error,
            "facts": self.facts or None,
        }


def _sample(result: ProbeResult) -> list[Any]:
    values = {**result.facts, "probed_at": result.probed_at, "reachable": result.reachable}
    return [values.get(name) for name in SAMPLE_FIELDS]


class FactsStore:
    """Read and record facts of one EDGECTL_HOME."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def latest(self) -> dict[str, dict[str, Any]]:
        """Per node name: reachable, reason, error, probed_at, seen_at and the last good facts."""
        with self.store.snapshot(FILE) as db:
            return {doc["name"]: dict(doc) for doc in db.table(LATEST).all()}

    def facts_by_node(self) -> dict[str, dict[str, Any]]:
        """The last good facts per node (for selectors and the scheduler)."""
        return {name: record.get("facts") or {} for name, record in self.latest().items()}

    def history(self, name: str) -> list[dict[str, Any]]:
        """The bounded sample history of one node, oldest first."""
        with self.store.snapshot(FILE) as db:
            for doc in db.table(HISTORY).all():
                if doc["name"] == name:
                    return [dict(zip(SAMPLE_FIELDS, s, strict=False)) for s in doc["samples"]]
        return []

    def record(self, results: Iterable[ProbeResult]) -> None:
        """Store one probe round: latest facts and one history sample per node, in one write."""
        results = list(results)
        if not results:
            return
        with self.store.transaction(FILE) as db:
            latest_table, history_table = db.table(LATEST), db.table(HISTORY)
            latest = {doc["name"]: dict(doc) for doc in latest_table.all()}
            history = {doc["name"]: list(doc["samples"]) for doc in history_table.all()}
            for result in results:
                previous = latest.get(result.name, {})
                entry = {
                    "name": result.name,
                    "reachable": result.reachable,
                    "reason": result.reason,
                    "error": result.error,
                    "probed_at": result.probed_at,
                    # An unreachable node keeps its last good facts, shown with their age.
                    "facts": result.facts if result.reachable else previous.get("facts"),
                    "seen_at": result.probed_at if result.reachable else previous.get("seen_at"),
                }
                latest[result.name] = entry
                samples = history.setdefault(result.name, [])
                samples.append(_sample(result))
                del samples[:-HISTORY_LIMIT]
            latest_table.truncate()
            latest_table.insert_multiple(latest.values())
            history_table.truncate()
            history_table.insert_multiple({"name": n, "samples": s} for n, s in history.items())

    def forget(self, names: Iterable[str]) -> None:
        """Drop the facts of nodes (removed from the inventory)."""
        gone = set(names)
        with self.store.transaction(FILE) as db:
            for table in (db.table(LATEST), db.table(HISTORY)):
                table.remove(doc_ids=[doc.doc_id for doc in table.all() if doc["name"] in gone])


def is_stale(record: Mapping[str, Any], now: float, max_age_s: float) -> bool:
    """Whether a node's latest probe is older than `max_age_s`."""
    probed = record.get("probed_at")
    return probed is None or now - float(probed) > max_age_s
