"""Speculative copies at the tail: race a late task on an idle node, first result wins."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edgectl.scheduler.filters import transfer_bytes
from edgectl.scheduler.model import TaskSpec
from edgectl.scheduler.planning import Candidate, NodeView


@dataclass(frozen=True)
class Straggler:
    """A running task that a copy might speed up, and when its one attempt should end."""

    task: TaskSpec
    node: str
    remaining_s: float  # from now until the original attempt should finish
    seq: int  # the order the task was added, for stable ties
    blocks_job: bool = False  # the tail of a job another job waits for
    late: bool = False  # running far past what was expected of it
    others_end_s: float = 0.0  # when the other running chunks that are on time should end
    work_left: float = 0.0  # of this task


def pick_duplicate(
    stragglers: Iterable[Straggler],
    rate: float,
    has_inputs: frozenset[str],
    s_per_byte: float,
    allowed: Callable[[TaskSpec], bool],
    budget: float,
    gain: float,
) -> tuple[Straggler, float] | None:
    """The straggler a free slot should copy, with the copy's expected seconds, or None."""
    # A copy is worth it only when it is expected to finish at least `gain` (a share)
    # sooner than the original and the work it would waste fits in the remaining
    # duplication `budget`; among those, the one that saves the most time wins.
    best: tuple[float, int, Straggler, float] | None = None
    for straggler in stragglers:
        task = straggler.task
        if not allowed(task):
            continue
        copy_s = transfer_bytes(task, has_inputs) * s_per_byte + task.work / rate
        if copy_s > (1.0 - gain) * straggler.remaining_s:
            continue
        if expected_waste(straggler, copy_s) > budget:
            continue
        saving = straggler.remaining_s - copy_s
        if best is None or (saving, -straggler.seq) > (best[0], -best[1]):
            best = (saving, straggler.seq, straggler, copy_s)
    return None if best is None else (best[2], best[3])


def expected_waste(straggler: Straggler, copy_s: float) -> float:
    """The work a copy expected to win in `copy_s` would make the original compute for nothing.

    What the original has computed so far, plus what it computes until the copy ends.
    """
    work = straggler.task.work
    if straggler.remaining_s <= 0:
        return work
    pace = straggler.work_left / straggler.remaining_s
    return min(work, work - straggler.work_left + copy_s * pace)


def critical(
    views: dict[str, NodeView],
    candidates: Sequence[Candidate],
    running: Iterable[Straggler],
    tail_margin: float,
) -> list[Straggler]:
    """The running tasks whose copy could end the run sooner, latest first."""
    # The tail of a job others wait for, and tasks expected to end well after all other
    # work: the later of the other on-time chunks and the fluid estimate (queued and
    # running work over the fleet's rate). A copy of any other task only wastes work.
    usable = [v for v in views.values() if not v.reasons]
    rate = sum(v.slots * v.plan_rate for v in usable)
    work = sum(c.task.work for c in candidates) + sum(v.queued_work for v in usable)
    found = []
    for s in running:
        fluid = max(0.0, work - s.work_left) / rate if rate > 0 else 0.0
        if s.blocks_job or s.remaining_s > (1 + tail_margin) * max(s.others_end_s, fluid):
            found.append(s)
    return sorted(found, key=lambda s: (-s.remaining_s, s.seq))


def copy_seconds(task: TaskSpec, view: NodeView, s_per_byte: float) -> float:
    """Seconds a copy of the task would take in a free slot of the node."""
    return transfer_bytes(task, view.has_inputs) * s_per_byte + task.work / view.plan_rate


def soonest_copy(
    straggler: Straggler,
    views: dict[str, NodeView],
    free: dict[str, int],
    now: float,
    s_per_byte: float,
) -> float:
    """The soonest a copy could end on any usable node, waiting for a slot if need be."""
    best = float("inf")
    for name, view in views.items():
        if view.reasons or name == straggler.node or view.plan_rate <= 0:
            continue
        wait = 0.0 if free.get(name) else max(0.0, min(view.busy_until, default=now) - now)
        best = min(best, wait + copy_seconds(straggler.task, view, s_per_byte))
    return best
