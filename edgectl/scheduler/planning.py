"""Place queued tasks on slots by earliest expected completion: the core of assign and plan.

Tasks are taken highest priority first, then largest work first (so the tail is made of
small tasks), and each goes to the slot where it would finish first:

    finish = max(slot free at, task released at) + transfer + work / rate

where transfer is zero for inputs already on the node. Data locality is therefore a
saving weighed against speed, never a pin.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edgectl.scheduler.filters import disk_need, disk_reason
from edgectl.scheduler.model import TaskSpec


@dataclass
class SlotPool:
    """One node's slots for planning: when each frees, how fast it works, what it holds."""

    node: str
    rate: float  # work units per second of one slot, for new tasks
    has_inputs: frozenset[str]
    disk_left: int | None  # free bytes after running tasks; None: do not check
    avail: list[tuple[float, int]]  # heap of (free at, slot index)


@dataclass(frozen=True)
class Candidate:
    """A task to place, the nodes allowed to take it and when it may start."""

    task: TaskSpec
    priority: int
    nodes: tuple[str, ...]
    release: float = 0.0


@dataclass(frozen=True)
class Placement:
    """A task on a slot, with absolute start and finish times."""

    task: TaskSpec
    node: str
    slot: int
    start: float
    finish: float
    transfer_s: float


def order_key(candidate: Candidate, seq: int) -> tuple[int, float, int]:
    """Highest priority first, then the largest work, then the order tasks were added."""
    return (-candidate.priority, -candidate.task.work, seq)


@dataclass
class NodeView:
    """A node at one instant: whether it may take work, its slots, rate and running chunks."""

    name: str
    reasons: list[str]  # why it can take no task at all; empty when it can
    slots: int
    free: int
    rate: float  # observed (or prior) work per second of one slot
    plan_rate: float  # the same, lowered by late tasks running there now
    observed: bool
    busy_until: list[float]  # when each running chunk is expected to end
    queued_work: float  # work left in its running chunks
    has_inputs: frozenset[str]
    disk_left: int | None
    lagging: bool = False  # several of its tasks late at once: it slowed down
    gate: int = 0  # chunks that compute at once (its free cores); 0: every slot computes


def make_pool(view: NodeView, now: float, extra_busy: Sequence[float] = ()) -> SlotPool:
    """A pool whose slots 0..free-1 may take a chunk now and the rest free as running
    chunks end."""
    # With more chunks running than slots (the node got busier), a slot frees only when
    # enough chunks have ended, so the latest end times are the ones that count.
    ends = sorted(max(now, end) for end in [*view.busy_until, *extra_busy])
    free = max(0, view.free - len(extra_busy))
    busy = ends[len(ends) - (view.slots - free) :] if view.slots > free else []
    # Past the node's gate only `gate` chunks compute: a free slot beyond its idle cores
    # takes a chunk now (its inputs upload meanwhile) that starts computing when the
    # next running chunk ends.
    idle = free if not view.gate else max(0, min(free, view.gate - (view.slots - free)))
    heap = [(now, index) for index in range(idle)]
    heap += [(ends[k] if k < len(ends) else now, idle + k) for k in range(free - idle)]
    heap += [(end, free + index) for index, end in enumerate(busy)]
    heapq.heapify(heap)
    return SlotPool(view.name, view.plan_rate, view.has_inputs, view.disk_left, heap)


def list_schedule(
    candidates: Iterable[Candidate],
    pools: dict[str, SlotPool],
    s_per_byte: float,
    disk_refusals: dict[str, str] | None = None,
    horizon: float | None = None,
    risk: float = 0.0,
) -> tuple[list[Placement], dict[str, str]]:
    """Place candidates in the order given; return placements and why some could not go."""
    # With a `horizon`, stop once no slot frees before it: nothing more could start in time.
    # Slots are compared by a late finish, start + transfer + (1 + risk) x compute: work
    # estimates are off by a share of the work, so a slow slot's finish is the less certain.
    placements: list[Placement] = []
    unplaceable: dict[str, str] = {}
    holders: dict[str, list[str]] = {}  # input -> the pools' nodes that already have it
    for each in pools.values():
        for name in each.has_inputs:
            holders.setdefault(name, []).append(each.node)
    for candidate in candidates:
        if horizon is not None and all(p.avail[0][0] > horizon for p in pools.values()):
            break
        task = candidate.task
        total = task.input_bytes
        local: dict[str, int] = {}
        for name, size in task.inputs.items():
            for node in holders.get(name, ()):
                local[node] = local.get(node, 0) + size
        best: tuple[float, float, float, SlotPool, float] | None = None
        for name in candidate.nodes:
            pool = pools.get(name)
            if pool is None or pool.rate <= 0:
                continue
            pushed = total - local.get(name, 0)
            if pool.disk_left is not None:
                refusal = disk_reason(pushed + task.output_bytes, pool.disk_left, 0)
                if refusal is not None:
                    if disk_refusals is not None:
                        disk_refusals.setdefault(name, refusal)
                    continue
            start = max(pool.avail[0][0], candidate.release)
            transfer = pushed * s_per_byte
            compute = task.work / pool.rate
            risky = start + transfer + (1 + risk) * compute
            if best is None or risky < best[0]:
                best = (risky, start, transfer, pool, start + transfer + compute)
        if best is None:
            unplaceable[task.id] = (
                "no eligible node has room for it" if candidate.nodes else "no eligible node"
            )
            continue
        _, start, transfer, pool, finish = best
        _, slot = heapq.heappop(pool.avail)
        heapq.heappush(pool.avail, (finish, slot))
        placements.append(Placement(task, pool.node, slot, start, finish, transfer))
    return placements, unplaceable


def cut_chunk(sequence: Sequence[Placement], now: float, target_s: float) -> list[Placement]:
    """The prefix of a free slot's planned sequence to dispatch now (guided self-scheduling)."""
    # Tasks are taken while they are planned to end within `target_s` of now, and at least
    # one: early on the target is large and chunks are long (little overhead); as the
    # remaining work shrinks so do the chunks, and the tail is made of single tasks.
    # A chunk holds one job's tasks only: it runs as one process of one kind.
    chunk: list[Placement] = []
    for placed in sequence:
        if chunk and (placed.finish - now > target_s or placed.task.job_id != chunk[0].task.job_id):
            break
        chunk.append(placed)
    return chunk


def probe_picks(
    views: dict[str, NodeView],
    free: dict[str, int],
    candidates: Sequence[Candidate],
    largest: float = 2.0,
) -> list[tuple[str, Candidate]]:
    """For each free slot of a node not yet measured, a task near the queue's lower quartile."""
    # Small, so that a slow node is not handed a large task on a guess and its rate is
    # learned soon; alike, so that nodes report in order of speed and the first large
    # tasks go to fast ones. Priority comes first: a node's first probe never runs a
    # lower-priority task while a higher one waits; its other slots take no task over
    # `largest` times the quartile (those wait for a node whose speed is known), so they
    # may run smaller tasks of lower priority, or stay free.
    unknown = [n for n, v in views.items() if not v.observed and free.get(n)]
    if not unknown or not candidates:
        return []
    works = [c.task.work for c in candidates]
    size = statistics.quantiles(works, n=4)[0] if len(works) > 1 else works[0]
    small = largest * size

    def closeness(c: Candidate) -> tuple[int, bool, float]:
        """The highest priority first, then near the size, then the nearest."""
        off = abs(c.task.work - size)
        return (-c.priority, off > 0.5 * size, off)

    # Slot by slot across the nodes (first slots first), so that with few tasks every
    # unknown node still gets one and is measured.
    picks: list[tuple[str, Candidate]] = []
    taken: set[str] = set()
    left = {name: free[name] for name in unknown}
    while any(left.values()):
        for name in unknown:
            if not left[name]:
                continue
            view = views[name]
            first = left[name] == free[name]
            fits = [
                c
                for c in candidates
                if name in c.nodes
                and c.task.id not in taken
                and fits_disk(c.task, view)
                and (first or c.task.work <= small)
            ]
            if not fits:
                left[name] = 0
                continue
            left[name] -= 1
            pick = min(fits, key=closeness)
            taken.add(pick.task.id)
            if view.disk_left is not None:
                view.disk_left -= disk_need(pick.task, view.has_inputs)
            picks.append((name, pick))
    return picks


def fits_disk(task: TaskSpec, view: NodeView) -> bool:
    """Whether the task's inputs and output fit in what is left of the node's disk."""
    return view.disk_left is None or disk_need(task, view.has_inputs) <= view.disk_left
