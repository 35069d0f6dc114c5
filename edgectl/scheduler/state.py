"""The scheduler's memory, and the views derived from it at one instant.

`SchedulerState` holds what the dispatcher was told (nodes, jobs, tasks, running chunks,
learned rates, failures) and answers read-only questions: how each node looks now,
which queued tasks may go where, which running tasks are late, what a dry run predicts.
The dispatcher adds the events and decisions on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgectl.inventory.model import Node
from edgectl.inventory.selectors import Selector
from edgectl.scheduler.filters import job_reasons, lang_reasons, node_reasons, task_langs
from edgectl.scheduler.model import (
    JobExplanation,
    JobSpec,
    JobStatus,
    NodeState,
    PlannedTask,
    SchedulerConfig,
    TaskSpec,
    TaskStatus,
)
from edgectl.scheduler.planning import (
    Candidate,
    NodeView,
    Placement,
    list_schedule,
    make_pool,
    order_key,
)
from edgectl.scheduler.rates import (
    RateBook,
    free_cores,
    remaining_time,
    slot_count,
    slot_share,
)
from edgectl.scheduler.speculation import Straggler


@dataclass
class TaskRecord:
    """A task and what happened to it so far."""

    spec: TaskSpec
    seq: int
    priority: int
    status: TaskStatus = TaskStatus.QUEUED
    attempts: dict[str, float | None] = field(default_factory=dict)  # node -> started at
    failures: dict[str, str] = field(default_factory=dict)  # node -> reason
    computed: set[str] = field(default_factory=set)  # nodes done computing it, result not home


@dataclass
class ChunkRecord:
    """Tasks sent together to one slot of a node, still running."""

    node: str
    task_ids: list[str]  # not yet finished, in run order
    since: float  # dispatched, or when its previous task ended
    transfer_s: float  # expected push time ahead of its first task
    bytes: int
    dispatched: float
    expected_s: dict[str, float]  # task id -> compute seconds expected when dispatched
    measured: bool  # whether the node's rate was known then (else the expectation is a guess)
    duplicate_of: str | None = None
    favoured: bool = False  # runs ahead of the node's other tasks (a full core when free)
    # Its tasks the node still holds: not yet home, given back or dropped (computed ones
    # included: their results are home only when the chunk's process has ended).
    held: set[str] = field(default_factory=set)
    reclaiming: set[str] = field(default_factory=set)  # asked back, answer not in yet

    def raceable(self) -> bool:
        """Whether killing the chunk's process would lose nothing but its current task."""
        return len(self.task_ids) == 1 and not self.reclaiming and self.held <= {self.task_ids[0]}


@dataclass
class JobRecord:
    """A job, its parsed selector, its tasks and its state."""

    spec: JobSpec
    seq: int
    selector: Selector
    task_ids: list[str]
    status: JobStatus
    reasons: list[str] = field(default_factory=list)
    work: float = 0.0  # of all its tasks


class SchedulerState:
    """Everything the dispatcher knows; every method here only reads it."""

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.rates = RateBook(self.config.rate_smoothing)
        self._nodes: dict[str, NodeState] = {}
        self._records: dict[str, Node | None] = {}
        self._background: dict[str, float] = {}
        self._chunks: dict[str, list[ChunkRecord]] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._tasks: dict[str, TaskRecord] = {}
        self._external_done: set[str] = set()
        self._fail_streak: dict[str, int] = {}
        self._excluded: dict[str, str] = {}
        self._lost: dict[str, float] = {}
        self._job_reasons: dict[tuple[str, str], list[str]] = {}
        self.total_work = 0.0
        self._prefetch = True  # see `_update_prefetch`
        # Work computed twice by copies and the attempts they raced, as far as we can tell:
        # while a race runs, what the original is expected to have computed for nothing by
        # the time its copy ends (`expected_waste`); once it is over, what the loser computed.
        self.duplicated_work = 0.0
        self._copy_reserved: dict[str, float] = {}  # task id -> counted for its race so far
        self.done_work = 0.0

    def job_status(self, job_id: str) -> JobStatus:
        """The state of a job added earlier."""
        return self._jobs[job_id].status

    def task_status(self, task_id: str) -> TaskStatus:
        """The state of a task added earlier."""
        return self._tasks[task_id].status

    def task_failures(self, task_id: str) -> dict[str, str]:
        """Per node, why the task failed there."""
        return dict(self._tasks[task_id].failures)

    def running_on(self, task_id: str) -> list[str]:
        """The nodes running an attempt of the task (two while a copy races the original)."""
        return sorted(self._tasks[task_id].attempts)

    def excluded_nodes(self) -> dict[str, str]:
        """Nodes excluded after repeated failures, with why."""
        return dict(self._excluded)

    @property
    def finished(self) -> bool:
        """Whether every job added is done or failed."""
        return all(j.status in (JobStatus.DONE, JobStatus.FAILED) for j in self._jobs.values())

    # ---- derived views ------------------------------------------------------------------

    def _started(self, chunk: ChunkRecord) -> float | None:
        return self._tasks[chunk.task_ids[0]].attempts.get(chunk.node)

    def _share(self, name: str, task_id: str | None = None) -> float:
        """The share of a core the task's chunk on the node has now (any slot's, for None).

        Favoured chunks come first: each has a whole core while there are enough free ones
        (they pass the node's gate at once); the others, one per free core past the gate
        (see `slot_count`), share what is left.
        """
        state = self._nodes.get(name)
        if state is None:
            return 1.0
        background = self._background.get(name, 0.0)
        gate = slot_count(state, background)
        min_share = self.config.min_free_share
        favoured = [c for c in self._chunks.get(name, []) if c.favoured]
        if not favoured:
            return slot_share(state, background, gate, min_share)
        cores = free_cores(state, background, min_share)
        first = min(1.0, cores / len(favoured))
        if any(task_id in c.task_ids for c in favoured):
            return first
        return max(min_share, min(1.0, (cores - first * len(favoured)) / gate))

    def _slots(self, state: NodeState, background: float) -> int:
        """Slots of a node: its free cores plus `extra_slots` (see `slot_count`)."""
        extra = self.config.extra_slots if self._prefetch else min(1, self.config.extra_slots)
        return slot_count(state, background, extra)

    def _update_prefetch(self) -> None:
        """Whether nodes keep their second extra slot (see `SchedulerConfig.prefetch_share`)."""
        queued = sum(t.spec.work for t in self._tasks.values() if t.status is TaskStatus.QUEUED)
        self._prefetch = queued >= self.config.prefetch_share * self.total_work

    def _views(self, now: float) -> dict[str, NodeView]:
        self._update_prefetch()
        return {name: self._view(name, now) for name in self._nodes}

    def _timing(self, chunk: ChunkRecord, rate: float, now: float) -> tuple[float, float, float]:
        """The chunk's current task: expected seconds now, expected at dispatch, elapsed."""
        # Before the task starts computing, its push is part of all three. News of a task
        # may come `report_delay_s` late: time within it is not counted against the task.
        first = self._tasks[chunk.task_ids[0]]
        started = first.attempts.get(chunk.node)
        delay = self.config.report_delay_s
        expected_now = first.spec.work / rate
        expected_then = expected_now
        if chunk.measured:
            expected_then = chunk.expected_s.get(first.spec.id, expected_now)
        if started is None:
            # Past its push, a chunk not yet computing waits at the node's gate for a core:
            # that wait is not lateness of its task.
            pushed = chunk.transfer_s
            elapsed = min(max(0.0, now - chunk.since - delay), pushed + self.config.dispatch_s)
            return expected_now + pushed, expected_then + pushed, elapsed
        return expected_now, expected_then, max(0.0, now - started - delay)

    def _any_free_slot(self, now: float) -> bool:
        """Whether some usable node has a free slot (a cheap check before the full views)."""
        self._update_prefetch()
        for name, state in self._nodes.items():
            slots = self._slots(state, self._background.get(name, 0.0))
            if len(self._chunks.get(name, [])) < slots and not node_reasons(
                state, now, self.config, self._excluded.get(name), self._lost.get(name)
            ):
                return True
        return False

    def _view(self, name: str, now: float) -> NodeView:
        state, config = self._nodes[name], self.config
        chunks = self._chunks.get(name, [])
        background = self._background.get(name, 0.0)
        slots = self._slots(state, background)
        gate = slot_count(state, background)
        rate = self.rates.slot_rate(state, background, slots, config.min_free_share)
        plan_rate = rate
        overruns = []
        for chunk in chunks:
            expected_now, expected_then, elapsed = self._timing(chunk, rate, now)
            if elapsed > expected_now and self._started(chunk) is not None:
                # Computing past its estimate: the node is slower than we thought. Judge
                # its speed by the task's predicted duration, not just the time so far.
                total = elapsed + remaining_time(expected_now, expected_then, elapsed)
                plan_rate = min(plan_rate, self._tasks[chunk.task_ids[0]].spec.work / total)
                overruns.append(elapsed / max(expected_then, 1e-9))
        overruns.sort(reverse=True)
        lagging = len(overruns) >= 2 and overruns[1] > config.lag_factor
        if lagging:
            # Several tasks late at once: the node itself slowed (estimates are off task by
            # task, not all together). How much is unknown: assume a lot, until it shows.
            plan_rate = min(plan_rate, rate / (config.lag_slowdown * overruns[0]))
        busy, queued = [], 0.0
        for chunk in chunks:
            expected_now, expected_then, elapsed = self._timing(chunk, plan_rate, now)
            left = remaining_time(expected_now, expected_then, elapsed)
            rest = sum(self._tasks[t].spec.work for t in chunk.task_ids[1:])
            busy.append(now + left + rest / plan_rate)
            queued += left * plan_rate + rest
        reasons = node_reasons(state, now, config, self._excluded.get(name), self._lost.get(name))
        reserved = sum(
            c.bytes for c in chunks if state.probed_at is None or c.dispatched > state.probed_at
        )
        disk_left = None if state.disk_free is None else state.disk_free - reserved
        return NodeView(
            name=name,
            reasons=reasons,
            slots=slots,
            free=0 if reasons else max(0, slots - len(chunks)),
            rate=rate,
            plan_rate=plan_rate,
            observed=self.rates.observed(name) is not None,
            busy_until=busy,
            queued_work=queued,
            has_inputs=state.has_inputs,
            disk_left=disk_left,
            lagging=lagging,
            gate=gate,
        )

    def _stragglers(self, views: dict[str, NodeView], now: float) -> list[Straggler]:
        """Every running task with one attempt, when it should end, and what marks it."""
        # `late`: its chunk's current task runs, or is now expected to run, far past what
        # was expected when it was dispatched (the node slowed, or the task is much bigger
        # than its estimate). `blocks_job`: the tail of a job others wait for, expected to
        # end well after the job could (its work left spread over the fleet).
        # `others_end_s`: when the other chunks that are on time should end.
        chunks: list[tuple[list[tuple[TaskRecord, float, float]], str, bool]] = []
        whole_only = self.config.copy_single_task_chunks_only
        uncopyable: set[int] = set()  # chunks holding several tasks, when those may not be raced
        job_work: dict[str, float] = {}  # work left in running tasks, per job
        for name, node_chunks in self._chunks.items():
            view = views.get(name)
            rate = view.rate if view else self.rates.unit()
            plan_rate = view.plan_rate if view else rate
            for chunk in node_chunks:
                expected_now, expected_then, elapsed = self._timing(chunk, plan_rate, now)
                late = max(elapsed, expected_now) > self.config.straggler_factor * expected_then
                if view is not None and view.lagging and elapsed > expected_then:
                    late = True
                ahead = remaining_time(expected_now, expected_then, elapsed)
                tasks = []
                for index, task_id in enumerate(chunk.task_ids):
                    task = self._tasks[task_id]
                    left = task.spec.work if index else ahead * plan_rate
                    if index:
                        ahead += task.spec.work / plan_rate
                    tasks.append((task, ahead, left))
                    job_work[task.spec.job_id] = job_work.get(task.spec.job_id, 0.0) + left
                if whole_only and not chunk.raceable():
                    uncopyable.add(len(chunks))
                chunks.append((tasks, name, late))
        on_time = sorted(
            ((tasks[-1][1], index) for index, (tasks, _, late) in enumerate(chunks) if not late),
            reverse=True,
        )
        blocking = self._blocking_jobs()
        fleet_rate = sum(v.slots * v.plan_rate for v in views.values() if not v.reasons)
        found = []
        for index, (tasks, name, late) in enumerate(chunks):
            if index in uncopyable:
                continue
            others = [end for end, other in on_time[:2] if other != index]
            for task, ahead, left in tasks:
                if len(task.attempts) != 1:
                    continue  # already copied
                tail = False
                if task.spec.job_id in blocking and fleet_rate > 0:
                    spread = job_work[task.spec.job_id] / fleet_rate
                    tail = ahead > (1 + self.config.tail_margin) * spread
                found.append(
                    Straggler(
                        task.spec, name, ahead, task.seq, tail, late, max(others, default=0), left
                    )
                )
        return found

    def _blocking_jobs(self) -> set[str]:
        """Jobs with nothing queued that some waiting job comes after."""
        awaited = {
            a
            for job in self._jobs.values()
            if job.status is JobStatus.WAITING
            for a in job.spec.after
        }
        return {
            job_id
            for job_id in awaited
            if job_id in self._jobs
            and not any(
                self._tasks[t].status is TaskStatus.QUEUED for t in self._jobs[job_id].task_ids
            )
        }

    def _reasons_for(self, job: JobRecord, node: str) -> list[str]:
        key = (job.spec.id, node)
        cached = self._job_reasons.get(key)
        if cached is None:
            cached = job_reasons(job.spec, self._nodes[node], job.selector, self._records[node])
            self._job_reasons[key] = cached
        return cached

    def _may_run(self, task: TaskRecord, node: str) -> bool:
        """Whether the task may go to the node, its job and node already being eligible."""
        if node in task.failures or node in task.attempts:
            return False
        if task.spec.only_on is not None and task.spec.only_on != node:
            return False
        extra = task_langs(task.spec, self._jobs[task.spec.job_id].spec)
        return not extra or not lang_reasons(extra, self._nodes[node].langs)

    def _ready(self, views: dict[str, NodeView], now: float) -> list[Candidate]:
        """Queued tasks of ready jobs, in placement order, with the nodes each may use."""
        usable = [name for name, view in views.items() if not view.reasons]
        keyed = []
        for job in self._jobs.values():
            if job.status is JobStatus.READY:
                keyed += self._job_candidates(job, usable, now)
        keyed.sort(key=lambda pair: pair[0])
        return [candidate for _, candidate in keyed]

    def _job_candidates(
        self, job: JobRecord, usable: list[str], release: float
    ) -> list[tuple[tuple[int, float, int], Candidate]]:
        nodes = tuple(n for n in usable if not self._reasons_for(job, n))
        keyed = []
        for task_id in job.task_ids:
            task = self._tasks[task_id]
            if task.status is not TaskStatus.QUEUED:
                continue
            allowed = nodes
            if task.failures or task.spec.requires_langs or task.spec.only_on:
                allowed = tuple(n for n in nodes if self._may_run(task, n))
            candidate = Candidate(task.spec, task.priority, allowed, release)
            keyed.append((order_key(candidate, task.seq), candidate))
        return keyed

    def _full_plan(
        self, views: dict[str, NodeView], now: float
    ) -> tuple[list[Placement], dict[str, str], dict[str, str]]:
        """Every queued task placed; jobs waiting on others start when those are planned to end."""
        pools = {n: make_pool(v, now) for n, v in views.items() if not v.reasons}
        usable = list(pools)
        refusals: dict[str, str] = {}
        step = self.config.transfer_s_per_byte
        placements, unplaceable = list_schedule(
            self._ready(views, now), pools, step, refusals, risk=self.config.finish_risk
        )
        ends: dict[str, float] = {}
        for name, chunks in self._chunks.items():
            if name in views:
                for chunk, end in zip(chunks, views[name].busy_until, strict=True):
                    for task_id in chunk.task_ids:
                        job_id = self._tasks[task_id].spec.job_id
                        ends[job_id] = max(ends.get(job_id, now), end)
        for placed in placements:
            ends[placed.task.job_id] = max(ends.get(placed.task.job_id, now), placed.finish)
        settled = {j for j, job in self._jobs.items() if job.status is not JobStatus.WAITING}
        waiting = [job for job in self._jobs.values() if job.status is JobStatus.WAITING]
        progress = True
        while waiting and progress:
            progress = False
            for job in list(waiting):
                after = job.spec.after
                if not all(a in settled or a in self._external_done for a in after):
                    continue
                release = max([now, *(ends.get(a, now) for a in after)])
                keyed = sorted(self._job_candidates(job, usable, release), key=lambda p: p[0])
                more, missed = list_schedule(
                    [c for _, c in keyed], pools, step, refusals, risk=self.config.finish_risk
                )
                placements += more
                unplaceable.update(missed)
                for placed in more:
                    ends[job.spec.id] = max(ends.get(job.spec.id, now), placed.finish)
                settled.add(job.spec.id)
                waiting.remove(job)
                progress = True
        for job in waiting:
            missing = [
                a for a in job.spec.after if self._dependency_status(a) is not JobStatus.DONE
            ]
            for task_id in job.task_ids:
                unplaceable[task_id] = f"waiting for job(s) {', '.join(missing)}"
        return placements, unplaceable, refusals

    def _makespan(
        self, views: dict[str, NodeView], placements: list[Placement], now: float
    ) -> float:
        ends = [p.finish for p in placements] + [e for v in views.values() for e in v.busy_until]
        return max([now, *ends]) - now

    @staticmethod
    def _planned(placed: Placement, now: float) -> PlannedTask:
        return PlannedTask(
            placed.task.id,
            placed.task.job_id,
            placed.node,
            placed.start - now,
            placed.finish - now,
            placed.transfer_s,
        )

    def _job_explanation(self, job: JobRecord) -> JobExplanation:
        counts = dict.fromkeys(TaskStatus, 0)
        for task_id in job.task_ids:
            counts[self._tasks[task_id].status] += 1
        return JobExplanation(
            id=job.spec.id,
            status=job.status.value,
            priority=job.spec.priority,
            queued=counts[TaskStatus.QUEUED],
            running=counts[TaskStatus.RUNNING],
            done=counts[TaskStatus.DONE],
            failed=counts[TaskStatus.FAILED],
            waiting_for=[
                a for a in job.spec.after if self._dependency_status(a) is not JobStatus.DONE
            ],
            reasons=list(job.reasons),
        )

    def _dependency_status(self, job_id: str) -> JobStatus | None:
        if job_id in self._external_done:
            return JobStatus.DONE
        job = self._jobs.get(job_id)
        return None if job is None else job.status
