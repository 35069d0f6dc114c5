"""The dispatcher: scheduler state driven by events, deciding what each free slot runs.

The executor and the simulator drive it the same way: tell it about nodes after each
probe (`update_nodes`), add jobs, ask `assign(now)` for work whenever a slot may be free,
and report what happened to each task. It never reads a clock, touches a file or draws
a random number, so the same calls always give the same decisions.

Giving back: a chunk's process takes its tasks one by one, claiming each before it
starts. Ask `take_back(now)` as often as `assign`; for each `TakeBack`, claim its tasks
on the node in one exec, then report the answer with `taken_back(request, returned,
now)`: the tasks whose claim the controller won come back to the queue, the others run
on. A chunk with a take-back in flight is asked nothing more and raced by no copy; a
chunk holding nothing but the task it computes may be raced like a task sent alone.

An assignment marked `favoured` holds a task its job would end with: run it at a higher
CPU priority than the node's other tasks (the job engine nices it less).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from itertools import takewhile

from edgectl.inventory.selectors import parse_selector
from edgectl.scheduler import explain as explaining
from edgectl.scheduler.filters import disk_need, inventory_node, transfer_bytes
from edgectl.scheduler.model import (
    Assignment,
    Explanation,
    JobSpec,
    JobStatus,
    NodeState,
    Plan,
    Stall,
    TakeBack,
    TaskSpec,
    TaskStatus,
)
from edgectl.scheduler.planning import (
    Candidate,
    NodeView,
    Placement,
    cut_chunk,
    fits_disk,
    list_schedule,
    make_pool,
    order_key,
    probe_picks,
)
from edgectl.scheduler.rates import background_load, remaining_time
from edgectl.scheduler.speculation import (
    Straggler,
    copy_seconds,
    critical,
    expected_waste,
    pick_duplicate,
    soonest_copy,
)
from edgectl.scheduler.state import ChunkRecord, JobRecord, SchedulerState, TaskRecord


class Dispatcher(SchedulerState):
    """Places tasks on nodes as events arrive; see the module docstring for the protocol."""

    # ---- events -------------------------------------------------------------------------

    def update_nodes(self, nodes: Iterable[NodeState], now: float) -> None:
        """Take the latest facts of some nodes; call right after a probe round."""
        for state in nodes:
            lost_at = self._lost.get(state.name)
            if lost_at is not None and state.reachable and (state.probed_at or 0) > lost_at:
                del self._lost[state.name]
            running = sum(
                1 for c in self._chunks.get(state.name, []) if self._started(c) is not None
            )
            self._background[state.name] = background_load(state.load1, running)
            self._nodes[state.name] = state
            self._records[state.name] = inventory_node(state)
        self._job_reasons.clear()

    def add_job(self, job: JobSpec, tasks: Sequence[TaskSpec], now: float) -> None:
        """Queue a job and its tasks; a bad selector raises UsageError, a clash ValueError."""
        if job.id in self._jobs:
            raise ValueError(f"job {job.id!r} was already added")
        for task in tasks:
            if task.job_id != job.id:
                raise ValueError(f"task {task.id!r} belongs to job {task.job_id!r}, not {job.id!r}")
            if task.id in self._tasks:
                raise ValueError(f"task {task.id!r} was already added")
        selector = parse_selector(job.selector)
        record = JobRecord(
            job,
            len(self._jobs),
            selector,
            [t.id for t in tasks],
            JobStatus.WAITING,
            work=sum(t.work for t in tasks),
        )
        self._jobs[job.id] = record
        for task in tasks:
            priority = job.priority if task.priority is None else task.priority
            self._tasks[task.id] = TaskRecord(task, len(self._tasks), priority)
            self.total_work += task.work
        self._refresh_jobs()

    def job_done(self, job_id: str) -> None:
        """Record a job as done elsewhere (say, in an earlier run), releasing jobs after it."""
        job = self._jobs.get(job_id)
        if job is None:
            self._external_done.add(job_id)
        elif job.status is not JobStatus.FAILED:
            job.status = JobStatus.DONE
        self._refresh_jobs()

    def task_started(self, task_id: str, node: str, now: float) -> None:
        """The task began computing on the node (after its inputs arrived)."""
        task = self._tasks[task_id]
        if node in task.attempts:
            task.attempts[node] = now

    def task_finished(
        self, task_id: str, node: str, seconds: float, now: float, work: float | None = None
    ) -> list[str]:
        """A task ended well after `seconds` of computing; return nodes whose copies to cancel."""
        task = self._tasks[task_id]
        if node not in task.attempts:
            return []
        share = self._share(node, task_id)  # while its chunk is still on record
        self._drop_attempt(task, node, now)
        if task.status is not TaskStatus.RUNNING:
            return []  # a copy already won
        if node not in task.computed:
            self.rates.observe(node, task.spec.work if work is None else work, seconds, share)
        task.computed.clear()
        self._fail_streak[node] = 0
        losers = sorted(task.attempts)
        self._settle_copies(task, losers, now)
        for other in losers:
            self._learn_from_loser(task, other, now)
            self._drop_attempt(task, other, now)
        task.status = TaskStatus.DONE
        self.done_work += task.spec.work
        self._task_final(task)
        return losers

    def task_computed(
        self, task_id: str, node: str, seconds: float, now: float, work: float | None = None
    ) -> None:
        """The node finished computing the task, which took `seconds`; its result is not home yet.

        The slot moves on to the chunk's next task (or frees); the task stays running until
        `task_finished` (its result stored) or `task_failed` (say, its chunk failed later).
        """
        task = self._tasks[task_id]
        if node not in task.attempts or node in task.computed:
            return
        if task.status is TaskStatus.RUNNING:
            share = self._share(node, task_id)
            self.rates.observe(node, task.spec.work if work is None else work, seconds, share)
        task.computed.add(node)
        for chunk in self._chunks.get(node, []):
            if task_id in chunk.task_ids:
                if chunk.task_ids[0] == task_id:
                    chunk.since, chunk.transfer_s = now, 0.0
                chunk.task_ids.remove(task_id)
                if not chunk.task_ids:
                    self._chunks[node].remove(chunk)
                return

    def adopt(
        self,
        node: str,
        task_ids: Sequence[str],
        now: float,
        duplicate_of: str | None = None,
        favoured: bool = False,
    ) -> None:
        """Take over tasks found running on a node (after a restart) as one chunk started now
        (`favoured`: it was started favoured)."""
        specs = [self._tasks[t].spec for t in task_ids]
        rate = self._view(node, now).plan_rate if node in self._nodes else self.rates.unit()
        self._dispatch(node, specs, now, rate, duplicate_of, favoured)
        self._tasks[task_ids[0]].attempts[node] = now

    def fail_task(self, task_id: str, reason: str) -> None:
        """Give up on a queued task that no node can run (say, its only data is on a lost node)."""
        task = self._tasks[task_id]
        if task.status is not TaskStatus.QUEUED:
            return
        task.failures.setdefault("", reason)
        task.status = TaskStatus.FAILED
        self._task_final(task)

    def cancel_job(self, job_id: str, now: float) -> dict[str, list[str]]:
        """Stop a job: nothing more of it is placed; return node -> its tasks running there."""
        job = self._jobs[job_id]
        running: dict[str, list[str]] = {}
        for task_id in job.task_ids:
            task = self._tasks[task_id]
            for node in sorted(task.attempts):
                running.setdefault(node, []).append(task_id)
                self._drop_attempt(task, node, now)
            if task.status is not TaskStatus.DONE:
                task.status = TaskStatus.FAILED
        if job.status is not JobStatus.DONE:
            job.status = JobStatus.FAILED
            job.reasons.append("cancelled")
        self._refresh_jobs()
        return running

    def task_returned(self, task_id: str, node: str, now: float) -> TaskStatus:
        """The attempt on the node was abandoned through no fault of the task: queue it again."""
        task = self._tasks[task_id]
        if node not in task.attempts or task.status is not TaskStatus.RUNNING:
            return task.status
        self._drop_attempt(task, node, now)
        task.computed.discard(node)
        if not task.attempts:
            task.status = TaskStatus.QUEUED
        return task.status

    def task_failed(self, task_id: str, node: str, reason: str, now: float) -> TaskStatus:
        """A task failed on a node: retry it elsewhere, or fail it after two nodes failed it."""
        task = self._tasks[task_id]
        if node not in task.attempts or task.status is not TaskStatus.RUNNING:
            return task.status
        self._drop_attempt(task, node, now)
        task.computed.discard(node)
        task.failures[node] = reason
        streak = self._fail_streak.get(node, 0) + 1
        self._fail_streak[node] = streak
        if streak >= self.config.exclude_after_failures:
            self._excluded[node] = f"{streak} failed tasks in a row, last: {reason}"
        if task.attempts:
            return task.status  # a copy still runs elsewhere
        if len(task.failures) >= 2:
            task.status = TaskStatus.FAILED
            self._task_final(task)
        else:
            task.status = TaskStatus.QUEUED
        return task.status

    def node_lost(self, node: str, now: float) -> list[str]:
        """The node is gone: its running tasks go back to the queue; return their ids."""
        requeued = []
        self._chunks.pop(node, None)
        # Every attempt there, in a chunk or computed with its result not yet home.
        for task in self._tasks.values():
            if node in task.attempts:
                task.attempts.pop(node)
                task.computed.discard(node)
                if task.status is TaskStatus.RUNNING and not task.attempts:
                    task.status = TaskStatus.QUEUED
                    requeued.append(task.spec.id)
        self._lost[node] = now
        return requeued

    def taken_back(self, request: TakeBack, returned: Iterable[str], now: float) -> list[str]:
        """The node answered a take-back: `returned` were not started and are queued again.

        The other tasks of the request had started and run on in their chunk (report them
        as usual). When the node could not be reached, call with nothing returned. Returns
        the tasks queued again.
        """
        back = set(returned)
        for chunk in self._chunks.get(request.node, []):
            chunk.reclaiming.difference_update(request.task_ids)
        queued = []
        for task_id in request.task_ids:
            if task_id not in back or request.node not in self._tasks[task_id].attempts:
                continue
            if self.task_returned(task_id, request.node, now) is TaskStatus.QUEUED:
                queued.append(task_id)
        return queued

    # ---- decisions ----------------------------------------------------------------------

    def take_back(self, now: float) -> list[TakeBack]:
        """Tasks to claim back from running chunks that would end well after the rest.

        The tasks asked for stay in their chunk until `taken_back` tells which came back;
        meanwhile nothing else is asked of that chunk and no copy races it.
        """
        if not self.config.give_back or not any(
            len(c.task_ids) > 1 for chunks in self._chunks.values() for c in chunks
        ):
            return []
        views = self._views(now)
        usable = [v for v in views.values() if not v.reasons]
        fleet_rate = sum(v.slots * v.plan_rate for v in usable)
        if fleet_rate <= 0:
            return []
        queued = sum(c.task.work for c in self._ready(views, now))
        fluid = (queued + sum(v.queued_work for v in usable)) / fleet_rate
        blocking = self._blocking_jobs()
        job_work: dict[str, float] = {}
        for chunk in (c for chunks in self._chunks.values() for c in chunks):
            for task_id in chunk.task_ids:
                spec = self._tasks[task_id].spec
                job_work[spec.job_id] = job_work.get(spec.job_id, 0.0) + spec.work
        # Giving back costs a round trip and a new dispatch elsewhere.
        slack = 2 * self.config.dispatch_s
        stretch = 1 + self.config.give_back_margin
        requests = []
        for name in sorted(self._chunks):
            view = views.get(name)
            if view is None or view.reasons:
                continue  # unreachable, or lost: nothing can be claimed there
            for chunk in self._chunks[name]:
                if len(chunk.task_ids) < 2 or chunk.reclaiming:
                    continue
                expected_now, expected_then, elapsed = self._timing(chunk, view.plan_rate, now)
                end = now + remaining_time(expected_now, expected_then, elapsed)
                back = []
                for task_id in chunk.task_ids[1:]:
                    spec = self._tasks[task_id].spec
                    end += spec.work / view.plan_rate
                    left = fluid
                    if spec.job_id in blocking:
                        left = job_work[spec.job_id] / fleet_rate
                    if end > now + slack + stretch * left:
                        back.append(task_id)
                if back:
                    chunk.reclaiming.update(back)
                    requests.append(TakeBack(name, tuple(back)))
        return requests

    def stalled(self, now: float) -> list[Stall]:
        """Chunks far past what was expected of them: to be ended.

        For each, the executor kills the chunk's process and reports its current task
        with `task_failed` (it failed on that node) and the rest with `task_returned`.
        Each attempt of a raced task is judged on its own: a hung input hangs its copy
        too, and the race goes on with the attempt left, if any.
        """
        found = []
        for name in sorted(self._chunks):
            # The node's rate as measured, not as planned: a lagging node is planned slower
            # the longer its task overruns, which would keep a hung task "on time" for ever.
            rate = self._view(name, now).rate if name in self._nodes else self.rates.unit()
            for chunk in self._chunks[name]:
                if not chunk.task_ids or chunk.reclaiming:
                    continue
                current = self._tasks[chunk.task_ids[0]]
                expected, _, elapsed = self._timing(chunk, rate, now)
                if elapsed > max(self.config.stall_min_s, self.config.stall_factor * expected):
                    held = tuple(sorted(chunk.held | set(chunk.task_ids)))
                    found.append(Stall(name, current.spec.id, held, elapsed))
        return found

    def assign(self, now: float) -> list[Assignment]:
        """Work for the free slots: probe tasks, planned chunks, then speculative copies."""
        if not self._any_free_slot(now):
            return []
        views = self._views(now)
        free = {name: view.free for name, view in views.items() if view.free}
        if not free:
            return []
        candidates = self._ready(views, now)
        assignments = []
        urgent: list[Straggler] = []
        running: list[Straggler] = []
        if self.config.duplicates:
            running = self._stragglers(views, now)
            urgent = critical(views, candidates, running, self.config.tail_margin)
        # The tail of a job others wait for holds them all up: its copies may spend the
        # whole budget. Copies of other late tasks take a slot from queued work: they may
        # spend only part of it, the rest is kept for the tail, where idle slots make
        # copies cheap.
        blocking = [s for s in urgent if s.blocks_job]
        if blocking:
            assignments += self._speculate(views, free, list(free), blocking, now)
        late = [s for s in urgent if s.late and not s.blocks_job]
        if late:
            done = self.done_work / self.total_work if self.total_work else 1.0
            share = max(self.config.early_copy_share, done)
            assignments += self._speculate(views, free, list(free), late, now, share)
        # Long tasks alone on a slot are favoured (see `_outlasts_job`), probes too: the last
        # task left may be a node's probe however long it is.
        spreads: dict[str, tuple[float, float]] = {}
        for name, pick in probe_picks(views, free, candidates, self.config.probe_largest):
            # Only a task longer than its job's average: with fewer tasks than slots every
            # task outlasts the spread, and favouring all of them favours none.
            job = self._jobs[pick.task.job_id]
            longer = pick.task.work * len(job.task_ids) > job.work
            favoured = (
                self.config.favour_long and longer and self._outlasts_job(pick.task, views, spreads)
            )
            rate = views[name].rate
            assignments.append(self._dispatch(name, [pick.task], now, rate, favoured=favoured))
            free[name] -= 1
        taken = {task_id for a in assignments for task_id in a.task_ids}
        candidates = [c for c in candidates if c.task.id not in taken]
        extra: dict[str, list[float]] = {}
        for a in assignments:
            extra.setdefault(a.node, []).append(self._chunk_end(self._chunks[a.node][-1]))
        pools = {
            name: make_pool(view, now, extra.get(name, ()))
            for name, view in views.items()
            if not view.reasons
        }
        capacity = sum(len(p.avail) * p.rate for p in pools.values())
        remaining = sum(c.task.work for c in candidates)
        fluid = remaining / capacity if capacity > 0 else 0.0
        # Shrinking chunks, but none so short that its fixed cost (upload and start, fetch)
        # is a large share of it, and none longer than an even split of what is left.
        floor = self.config.dispatch_s / self.config.max_dispatch_share
        target = max(fluid / self.config.chunk_divisor, min(floor, fluid))
        # Long tasks of a job about to be released are planned too, from when it should be;
        # the slot one is planned to start on is held for it (see `_backfill`).
        coming = self._coming(views, now, spreads) if self.config.hold_for_long else []
        held_ids = {c.task.id for c in coming}
        planned = candidates
        if coming:
            planned = sorted(
                [*candidates, *coming], key=lambda c: order_key(c, self._tasks[c.task.id].seq)
            )
        placements, _ = list_schedule(
            planned,
            pools,
            self.config.transfer_s_per_byte,
            horizon=now + target,
            risk=self.config.finish_risk,
        )
        # Slots 0..free-1 of each pool are the ones free now.
        sequences: dict[tuple[str, int], list[Placement]] = {}
        for placed in placements:
            if placed.slot < free.get(placed.node, 0):
                sequences.setdefault((placed.node, placed.slot), []).append(placed)
        held: list[tuple[str, float]] = []
        for (name, _slot), sequence in sorted(sequences.items()):
            if sequence[0].task.id in held_ids:
                held.append((name, sequence[0].start))
                continue
            sequence = list(takewhile(lambda p: p.task.id not in held_ids, sequence))
            chunk = self._fit_disk(cut_chunk(sequence, now, target), views[name])
            if chunk:
                tasks = [p.task for p in chunk]
                favoured = (
                    self.config.favour_long
                    and len(tasks) == 1
                    and self._outlasts_job(tasks[0], views, spreads)
                )
                rate = views[name].plan_rate
                assignments.append(self._dispatch(name, tasks, now, rate, favoured=favoured))
                free[name] -= 1
                taken.update(p.task.id for p in chunk)
        for name, until in held:
            fill = self._backfill(views[name], candidates, taken, now, until)
            if fill is not None:
                assignments.append(self._dispatch(name, [fill], now, views[name].plan_rate))
                free[name] -= 1
                taken.add(fill.id)
        if self.config.duplicates:
            # The tail: slots left idle because nothing queued may run there. Once nothing
            # is queued at all, the run ends with the last running task, whether or not it
            # stands out from the others: each, latest first, may be copied where the copy
            # would end sooner.
            wanted = {n for c in candidates if c.task.id not in taken for n in c.nodes}
            idle = [n for n, count in free.items() if count and n not in wanted]
            copied = {a.task_ids[0] for a in assignments if a.duplicate_of}
            if idle and all(c.task.id in taken for c in candidates):
                urgent = sorted(running, key=lambda s: (-s.remaining_s, s.seq))
            urgent = [s for s in urgent if s.task.id not in copied]
            if idle and urgent:
                assignments += self._speculate(views, free, idle, urgent, now)
        return assignments

    def plan(self, now: float) -> Plan:
        """A dry run: every queued task placed, jobs after others once those are planned."""
        views = self._views(now)
        placements, unplaceable, _ = self._full_plan(views, now)
        return Plan(
            now,
            [self._planned(p, now) for p in placements],
            unplaceable,
            self._makespan(views, placements, now),
        )

    def explain(self, now: float, job_id: str | None = None) -> Explanation:
        """Per node, why it is chosen or rejected and its score parts; per job, its state."""
        views = self._views(now)
        placements, unplaceable, refusals = self._full_plan(views, now)
        jobs = [self._jobs[job_id]] if job_id is not None else list(self._jobs.values())
        open_jobs = [j for j in jobs if j.status in (JobStatus.READY, JobStatus.WAITING)]
        job_reasons_by_node = {
            name: {j.spec.id: self._reasons_for(j, name) for j in open_jobs} for name in views
        }
        return explaining.build(
            now,
            views,
            [p for p in placements if job_id is None or p.task.job_id == job_id],
            job_reasons_by_node,
            refusals,
            [self._job_explanation(j) for j in jobs],
            unplaceable,
            self._makespan(views, placements, now),
            self.config.transfer_s_per_byte,
        )

    # ---- internals ----------------------------------------------------------------------

    def _settle_copies(self, task: TaskRecord, losers: list[str], now: float) -> None:
        """A race is over: count what the losers computed instead of the waste expected."""
        # At the rate their nodes were last known to work at, not lowered for lateness:
        # an attempt that lost is slow, so this errs toward counting too much.
        reserved = self._copy_reserved.pop(task.spec.id, None)
        if reserved is None:
            return
        computed = 0.0
        for node in losers:
            started = task.attempts.get(node)
            if started is None or node not in self._nodes:
                continue
            core = self.rates.estimate(node)
            rate = (self.rates.unit() if core is None else core) * self._share(node, task.spec.id)
            computed += min(task.spec.work, max(0.0, now - started) * rate)
        self.duplicated_work += computed - reserved

    def _learn_from_loser(self, task: TaskRecord, node: str, now: float) -> None:
        """Learn from an attempt a copy beat: its node is slower than we thought."""
        # Take the attempt as needing as long again as its overrun, as `remaining_time`
        # predicts; before its expected time it may yet have been on time: learn nothing.
        started = task.attempts.get(node)
        chunk = next((c for c in self._chunks.get(node, []) if c.task_ids[0] == task.spec.id), None)
        if started is None or chunk is None or now <= started:
            return
        elapsed = now - started
        expected_then = chunk.expected_s.get(task.spec.id, elapsed)
        if elapsed > expected_then:
            total = 2 * elapsed - expected_then
            self.rates.observe(node, task.spec.work, total, self._share(node, task.spec.id))

    def _speculate(
        self,
        views: dict[str, NodeView],
        free: dict[str, int],
        nodes: list[str],
        stragglers: list[Straggler],
        now: float,
        cap_share: float = 1.0,
    ) -> list[Assignment]:
        """Copies of stragglers for free slots of `nodes`, within `cap_share` of the budget."""
        assignments: list[Assignment] = []
        step = self.config.transfer_s_per_byte
        best = {s.task.id: soonest_copy(s, views, free, now, step) for s in stragglers}
        for name in sorted(nodes, key=lambda n: (-views[n].plan_rate, n)):
            view = views[name]
            while free.get(name) and stragglers:
                cap = cap_share * self.config.duplicate_work_cap * self.total_work
                budget = cap - self.duplicated_work
                choice = pick_duplicate(
                    stragglers,
                    view.plan_rate,
                    view.has_inputs,
                    self.config.transfer_s_per_byte,
                    partial(self._copy_allowed, name, view, best),
                    budget,
                    self.config.duplicate_gain,
                )
                if choice is None:
                    break
                straggler, copy_s = choice
                stragglers.remove(straggler)
                waste = expected_waste(straggler, copy_s)
                self.duplicated_work += waste
                self._copy_reserved[straggler.task.id] = waste
                if view.disk_left is not None:
                    view.disk_left -= disk_need(straggler.task, view.has_inputs)
                copy = self._dispatch(name, [straggler.task], now, view.plan_rate, straggler.node)
                assignments.append(copy)
                free[name] -= 1
        return assignments

    def _copy_allowed(
        self, node: str, view: NodeView, best: dict[str, float], spec: TaskSpec
    ) -> bool:
        """Whether the node may take a copy now (no busy node would end it much sooner)."""
        task = self._tasks[spec.id]
        if task.failures:
            return False  # it failed somewhere already: a copy races a slow node, not a bad input
        job = self._jobs[spec.job_id]
        if self._reasons_for(job, node) or not self._may_run(task, node):
            return False
        if not fits_disk(spec, view):
            return False
        step = self.config.transfer_s_per_byte
        return copy_seconds(spec, view, step) <= (1 + self.config.duplicate_gain) * best[spec.id]

    def _outlasts_job(
        self, spec: TaskSpec, views: dict[str, NodeView], spreads: dict[str, tuple[float, float]]
    ) -> bool:
        """Whether the task alone on the fastest slot it may use would take longer than its
        job's work spread over every slot it may use: the job ends with it. `spreads`
        caches, per job, its fastest slot rate and its spread."""
        job = self._jobs[spec.job_id]
        if job.spec.id not in spreads:
            rates = [
                (v.slots, v.rate)
                for n, v in views.items()
                if not v.reasons and not self._reasons_for(job, n)
            ]
            capacity = sum(slots * rate for slots, rate in rates)
            fastest = max((rate for _, rate in rates), default=0.0)
            spreads[job.spec.id] = (fastest, job.work / capacity if capacity > 0 else 0.0)
        fastest, spread = spreads[job.spec.id]
        return fastest > 0 and spec.work / fastest > spread

    def _coming(
        self, views: dict[str, NodeView], now: float, spreads: dict[str, tuple[float, float]]
    ) -> list[Candidate]:
        """The long tasks (see `_outlasts_job`) of waiting jobs about to be released, each
        released when it should be.

        A job is about to be released when every job it comes after is done or has nothing
        left queued; it should be when their running chunks are expected to end.
        """
        running = self._blocking_jobs()
        if not running:
            return []
        ends: dict[str, float] = {}
        for name, chunks in self._chunks.items():
            view = views.get(name)
            if view is None:
                continue
            # Chunks dispatched earlier in this call come last, with no expected end yet.
            for chunk, end in zip(chunks, view.busy_until, strict=False):
                job_id = self._tasks[chunk.task_ids[0]].spec.job_id
                if job_id in running:
                    ends[job_id] = max(ends.get(job_id, now), end)
        usable = [name for name, view in views.items() if not view.reasons]
        found = []
        for job in self._jobs.values():
            if job.status is not JobStatus.WAITING or not all(
                a in running or self._dependency_status(a) is JobStatus.DONE for a in job.spec.after
            ):
                continue
            release = max([now, *(ends.get(a, now) for a in job.spec.after)])
            found += [
                candidate
                for _, candidate in self._job_candidates(job, usable, release)
                if self._outlasts_job(candidate.task, views, spreads)
            ]
        return found

    def _backfill(
        self,
        view: NodeView,
        candidates: list[Candidate],
        taken: set[str],
        now: float,
        until: float,
    ) -> TaskSpec | None:
        """The largest queued task a held slot can run and still be free by `until`."""
        best = None
        step = self.config.transfer_s_per_byte
        for candidate in candidates:
            task = candidate.task
            if task.id in taken or view.name not in candidate.nodes or not fits_disk(task, view):
                continue
            compute = (1 + self.config.finish_risk) * task.work / view.plan_rate
            if now + transfer_bytes(task, view.has_inputs) * step + compute > until:
                continue
            if best is None or task.work > best.work:
                best = task
        if best is not None and view.disk_left is not None:
            view.disk_left -= disk_need(best, view.has_inputs)
        return best

    def _fit_disk(self, chunk: list[Placement], view: NodeView) -> list[Placement]:
        """Cut a chunk to what fits on the node's disk; reserve it."""
        if view.disk_left is None:
            return chunk
        kept: list[Placement] = []
        for placed in chunk:
            need = disk_need(placed.task, view.has_inputs)
            if need > view.disk_left:
                break
            view.disk_left -= need
            kept.append(placed)
        return kept

    def _dispatch(
        self,
        node: str,
        tasks: list[TaskSpec],
        now: float,
        rate: float,
        duplicate_of: str | None = None,
        favoured: bool = False,
    ) -> Assignment:
        has_inputs = self._nodes[node].has_inputs
        pushed = sum(disk_need(t, has_inputs) - t.output_bytes for t in tasks)
        chunk = ChunkRecord(
            node=node,
            task_ids=[t.id for t in tasks],
            since=now,
            transfer_s=pushed * self.config.transfer_s_per_byte,
            bytes=sum(disk_need(t, has_inputs) for t in tasks),
            dispatched=now,
            expected_s={t.id: t.work / rate for t in tasks},
            measured=self.rates.observed(node) is not None,
            duplicate_of=duplicate_of,
            favoured=favoured,
            held={t.id for t in tasks},
        )
        self._chunks.setdefault(node, []).append(chunk)
        for spec in tasks:
            task = self._tasks[spec.id]
            task.status = TaskStatus.RUNNING
            task.attempts[node] = None
        return Assignment(node, tuple(chunk.task_ids), duplicate_of, favoured)

    @staticmethod
    def _chunk_end(chunk: ChunkRecord) -> float:
        return chunk.since + chunk.transfer_s + sum(chunk.expected_s.values())

    def _drop_attempt(self, task: TaskRecord, node: str, now: float) -> None:
        """Remove a task from the node's chunk; a chunk with nothing left frees its slot."""
        task.attempts.pop(node, None)
        chunks = self._chunks.get(node, [])
        for chunk in chunks:
            chunk.held.discard(task.spec.id)
            chunk.reclaiming.discard(task.spec.id)
            if task.spec.id in chunk.task_ids:
                if chunk.task_ids[0] == task.spec.id:
                    chunk.since, chunk.transfer_s = now, 0.0
                chunk.task_ids.remove(task.spec.id)
                if not chunk.task_ids:
                    chunks.remove(chunk)
                return

    def _task_final(self, task: TaskRecord) -> None:
        job = self._jobs[task.spec.job_id]
        states = [self._tasks[t].status for t in job.task_ids]
        if all(s in (TaskStatus.DONE, TaskStatus.FAILED) for s in states):
            failed = [t for t in job.task_ids if self._tasks[t].status is TaskStatus.FAILED]
            if failed:
                job.status = JobStatus.FAILED
                job.reasons.append(f"{len(failed)} task(s) failed, first: {failed[0]}")
            else:
                job.status = JobStatus.DONE
            self._refresh_jobs()

    def _refresh_jobs(self) -> None:
        """Release jobs whose `after` jobs are done; fail those after a failed one."""
        changed = True
        while changed:
            changed = False
            for job in self._jobs.values():
                if job.status is not JobStatus.WAITING:
                    continue
                states = {a: self._dependency_status(a) for a in job.spec.after}
                failed = [a for a, s in states.items() if s is JobStatus.FAILED]
                if failed:
                    job.status, changed = JobStatus.FAILED, True
                    why = (
                        "; ".join(self._jobs[failed[0]].reasons) if failed[0] in self._jobs else ""
                    )
                    job.reasons.append(
                        f"after job {failed[0]}, which failed" + (f" ({why})" if why else "")
                    )
                    for task_id in job.task_ids:
                        self._tasks[task_id].status = TaskStatus.FAILED
                elif all(s is JobStatus.DONE for s in states.values()):
                    job.status, changed = JobStatus.READY, True
                    if all(self._tasks[t].status is TaskStatus.DONE for t in job.task_ids):
                        job.status = JobStatus.DONE  # no tasks at all
