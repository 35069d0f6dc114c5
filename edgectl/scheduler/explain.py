"""Turn a dry-run plan into per-node verdicts with score parts, as plain data."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from edgectl.scheduler.filters import transfer_bytes
from edgectl.scheduler.model import Explanation, JobExplanation, NodeExplanation
from edgectl.scheduler.planning import NodeView, Placement


def build(
    now: float,
    views: dict[str, NodeView],
    placements: list[Placement],
    job_reasons: dict[str, dict[str, list[str]]],
    disk_refusals: dict[str, str],
    jobs: list[JobExplanation],
    unplaceable: dict[str, str],
    makespan_s: float,
    s_per_byte: float,
) -> Explanation:
    """The explanation of a plan: `job_reasons` maps node -> job id -> why that job may not run there."""
    by_node: dict[str, list[Placement]] = {}
    for placed in placements:
        by_node.setdefault(placed.node, []).append(placed)
    smallest = min(placements, key=lambda p: (p.task.work, p.task.id), default=None)
    nodes = []
    for name, view in views.items():
        reasons = list(view.reasons) + _job_level(job_reasons.get(name, {}))
        planned = by_node.get(name, [])
        if not reasons and not planned and name in disk_refusals:
            reasons.append(disk_refusals[name])
        nodes.append(_node(now, view, planned, reasons, smallest, makespan_s, s_per_byte))
    return Explanation(now, makespan_s, nodes, jobs, dict(unplaceable))


def to_dict(explanation: Explanation) -> dict[str, Any]:
    """The JSON shape of an explanation (stable keys, plain values)."""
    return asdict(explanation)


def _job_level(reasons_by_job: dict[str, list[str]]) -> list[str]:
    """Job reasons count against a node only when every open job rejects it."""
    if not reasons_by_job or any(not why for why in reasons_by_job.values()):
        return []
    if len(reasons_by_job) == 1:
        return list(next(iter(reasons_by_job.values())))
    return [f"job {job}: {why}" for job, reasons in reasons_by_job.items() for why in reasons]


def _node(
    now: float,
    view: NodeView,
    planned: list[Placement],
    reasons: list[str],
    smallest: Placement | None,
    makespan_s: float,
    s_per_byte: float,
) -> NodeExplanation:
    slots = max(1, view.slots)
    wait = view.queued_work / (view.plan_rate * slots) if view.plan_rate > 0 else 0.0
    transfer = sum(p.transfer_s for p in planned) / slots
    compute = sum(p.finish - p.start - p.transfer_s for p in planned) / slots
    finish = max([now, *view.busy_until, *(p.finish for p in planned)]) - now
    local = sum(1 for p in planned for name in p.task.inputs if name in view.has_inputs)
    if reasons:
        verdict = "rejected: " + "; ".join(reasons)
    elif planned:
        verdict = f"chosen: {len(planned)} task(s), {local} input(s) already there, done in {finish:.0f} s"
    elif smallest is None:
        verdict = "eligible: nothing queued"
    else:
        start = 0.0 if view.free else min(view.busy_until, default=now) - now
        moved = transfer_bytes(smallest.task, view.has_inputs) * s_per_byte
        ends = start + moved + smallest.task.work / view.plan_rate
        verdict = (
            f"not chosen: even the smallest queued task would end at {ends:.0f} s here, "
            f"other nodes finish everything in {makespan_s:.0f} s"
        )
    return NodeExplanation(
        node=view.name,
        eligible=not reasons,
        verdict=verdict,
        reasons=reasons,
        slots=view.slots,
        free_slots=view.free,
        rate=round(view.plan_rate, 6),
        rate_source="observed" if view.observed else "prior",
        wait_s=round(wait, 3),
        transfer_s=round(transfer, 3),
        compute_s=round(compute, 3),
        finish_s=round(finish, 3),
        tasks=len(planned),
        local_inputs=local,
    )
