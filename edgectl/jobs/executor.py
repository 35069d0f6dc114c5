"""The executor: runs the scheduler's placements, uploads and starts them detached, polls, pulls.

One process drives a job at a time (a lock file per job; `job resume` may drive several
together, their tasks placed by priority across them). The scheduler (`edgectl.scheduler`)
decides where each input runs and in which chunks; the executor turns each placement into
a task on its node and reports back what happened. All state changes go through the ledger
in batches; after a crash `job resume` rebuilds the picture from the ledger and asks the
nodes what became of each task, so nothing is lost or stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgectl.errors import EdgectlError
from edgectl.facts.store import ProbeResult
from edgectl.inventory.model import Node
from edgectl.jobs import remote
from edgectl.jobs.kinds import Kind, get_kind
from edgectl.jobs.ledger import Ledger
from edgectl.jobs.model import Attempt, Job, JobState, Task, TaskState, job_state, new_id
from edgectl.jobs.placement import (
    job_spec,
    local_inputs,
    node_state,
    scheduler_config,
    task_key,
    task_specs,
)
from edgectl.jobs.results import ResultError, results_dir, store_output, write_manifest
from edgectl.scheduler import Assignment, Dispatcher, JobStatus, SchedulerConfig, TaskStatus
from edgectl.transport import ConnectionPool, TransportError

ACTIVE = (TaskState.PLACED, TaskState.UPLOADING, TaskState.RUNNING, TaskState.DOWNLOADING)

Prober = Callable[[list[Node]], Awaitable[list[ProbeResult]]]


@dataclass
class ExecOptions:
    """Limits and pacing of one executor run."""

    op_timeout: float = 30.0  # one exec or transfer
    lease: float = 20.0  # a node silent this long loses its tasks to other nodes
    poll_min: float = 0.1
    poll_max: float = 2.0
    start_wait_steps: int = 10  # 20 ms steps the start exec waits for a quick task
    max_file: int = 256 * 1024 * 1024
    max_task_output: int = 1024 * 1024 * 1024
    flush_interval: float = 0.2
    reprobe_s: float = 60.0  # facts (load, disk) are refreshed this often during a run
    scheduler: SchedulerConfig | None = None  # None: suited to these options


@dataclass
class NodeSlot:
    """What the executor knows of one node during a run."""

    node: Node
    active: set[str] = field(default_factory=set)  # ledger task ids
    last_ok: float = 0.0
    next_poll: float = 0.0
    poll_interval: float = 0.1
    lost: bool = False
    cleanup: list[str] = field(default_factory=list)
    polling: bool = False
    # Tasks taken back from the node while it did not answer: they may still run there,
    # and are killed once it answers again (or at the end of the run).
    abandoned: set[str] = field(default_factory=set)


@dataclass
class Progress:
    """How far a running task got: inputs reported computed, and since when."""

    done: int = 0
    since: float = 0.0


class JobBusy(EdgectlError):
    """Another edgectl process is running this job."""


@contextlib.contextmanager
def job_lock(home: Path, job_id: str) -> Iterator[None]:
    """Hold the one-executor-per-job lock, or raise JobBusy at once."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(home / f".job-{job_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobBusy(f"job {job_id} is being run by another edgectl process") from None
        yield
    finally:
        os.close(fd)


def job_is_busy(home: Path, job_id: str) -> bool:
    """Whether some process holds the job's executor lock."""
    try:
        with job_lock(home, job_id):
            return False
    except JobBusy:
        return True


@dataclass
class RunJob:
    """A job driven by this executor."""

    job: Job
    kind: Kind
    results: Path
    items: dict[str, dict[str, Any]]  # scheduler task id -> input
    cancelled: bool = False


class Executor:
    """Drives jobs to their end over a connection pool, placing through the scheduler."""

    def __init__(
        self,
        home: Path,
        ledger: Ledger,
        jobs: Sequence[tuple[Job, list[Task]]],
        nodes: list[Node],
        probed: list[ProbeResult],
        pool: ConnectionPool,
        options: ExecOptions | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        prober: Prober | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.home, self.ledger, self.pool = home, ledger, pool
        self.options = options or ExecOptions()
        self.on_progress = on_progress
        self.prober = prober
        self.clock = clock
        now = clock()
        self.nodes = {n.name: NodeSlot(n, last_ok=now) for n in nodes}
        self.jobs: dict[str, RunJob] = {}
        self.tasks: dict[str, Task] = {}
        for job, tasks in jobs:
            items = {task_key(job.id, i["name"]): i for i in job.params.get("inputs", [])}
            self.jobs[job.id] = RunJob(job, get_kind(job.kind), results_dir(home, job.id), items)
            self.tasks.update((t.id, t) for t in tasks)
        self.dispatcher = Dispatcher(
            self.options.scheduler
            or scheduler_config(self.options.poll_max, self.options.reprobe_s)
        )
        self.holder: dict[str, str] = {}  # input -> the primary ledger task that holds it
        self.attempt: dict[tuple[str, str], str] = {}  # (input, node) -> ledger task running it
        self.claimed: dict[str, str] = {}  # input -> the ledger task whose result is coming home
        self.known: set[str] = set()  # inputs handed to the scheduler in this run
        self.progress: dict[str, Progress] = {}
        self.changes: dict[str, dict[str, Any]] = {}
        self.new_tasks: list[Task] = []
        self.events: list[tuple[str, str]] = []
        self.last_flush = 0.0
        self.last_probe = now
        self.wakeup = asyncio.Event()
        self.workers: set[asyncio.Task[None]] = set()
        self.adopted: set[str] = set()
        self.bytes_uploaded: dict[str, int] = {}  # per job
        self.probed = probed
        self.crashed: BaseException | None = None

    # -- bookkeeping ------------------------------------------------------------------------

    def _set(self, task: Task, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(task, key, value)
        change = self.changes.setdefault(task.id, {})
        change.update({k: getattr(task, k) for k in fields})
        if "attempts" in fields or "state" in fields:
            change["attempts"] = list(task.attempts)

    def event(self, job_id: str, text: str) -> None:
        """Record an event of one job (written with the next flush)."""
        self.events.append((job_id, text))

    def flush(self) -> None:
        """Write the batched changes (one write)."""
        if self.changes or self.new_tasks or self.events:
            self.ledger.apply(self.changes, self.new_tasks, self.events)
            self.changes, self.new_tasks, self.events = {}, [], []
        self.last_flush = self.clock()

    def _inputs_of(self, task: Task) -> list[str]:
        return [task_key(task.job_id, i["name"]) for i in task.inputs]

    def _new_task(self, job_id: str, items: list[dict[str, Any]], **fields: Any) -> Task:
        task = Task(id=new_id("t"), job_id=job_id, inputs=items, **fields)
        self.tasks[task.id] = task
        self.new_tasks.append(task)
        return task

    def _done_count(self) -> tuple[int, int]:
        total = sum(len(r.items) for r in self.jobs.values())
        ended = sum(
            1
            for r in self.jobs.values()
            for key in r.items
            if key not in self.known
            or self.dispatcher.task_status(key) in (TaskStatus.DONE, TaskStatus.FAILED)
        )
        return ended, total

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(*self._done_count())

    # -- setting up ---------------------------------------------------------------------------

    def _setup(self) -> None:
        """Tell the scheduler the nodes, the jobs and what the ledger shows in flight."""
        now = time.time()
        local = local_inputs(r.job for r in self.jobs.values())
        self.dispatcher.update_nodes(
            [
                node_state(self.nodes[p.name].node, p, local.get(p.name, frozenset()))
                for p in self.probed
                if p.name in self.nodes
            ],
            now,
        )
        done: set[str] = set()
        ended: set[str] = set()  # failed or cancelled for good (until `job retry`)
        for task in self.tasks.values():
            keys = self._inputs_of(task)
            if task.state == TaskState.DONE:
                done.update(keys)
            elif task.duplicate_of is None and not task.moved_to:
                if task.state.final:
                    ended.update(keys)
                for key in keys:
                    self.holder[key] = task.id
        for run in self.jobs.values():
            keys = [k for k in run.items if k not in done and k not in ended]
            items = [run.items[k] for k in keys]
            self.known.update(keys)
            self.dispatcher.add_job(
                job_spec(run.job, run.kind), task_specs(run.job, run.kind, items), now
            )
            for name, why in self._refusals(run).items():
                self.event(run.job.id, f"node {name} cannot run {run.job.kind} tasks: {why}")
        for run in self.jobs.values():
            for after in run.job.after:
                if after not in self.jobs:
                    self.dispatcher.job_done(after)  # waited for before this run
        for task in sorted(self.tasks.values(), key=lambda t: t.duplicate_of is not None):
            if task.state in ACTIVE:
                self._adopt(task, done, now)
            elif task.state.final:
                # A crash may have come between its end and the removal of its directories.
                for node in {a.node for a in task.attempts} | {task.node or ""}:
                    if node in self.nodes and task.id not in self.nodes[node].cleanup:
                        self.nodes[node].cleanup.append(task.id)

    def _refusals(self, run: RunJob) -> dict[str, str]:
        found = {}
        for probed in self.probed:
            if probed.reachable and probed.name in self.nodes:
                why = run.kind.eligible(run.job.params, probed.facts)
                if why:
                    found[probed.name] = why
        return found

    def _adopt(self, task: Task, done: set[str], now: float) -> None:
        """After a crash: a task the ledger shows in flight is asked about, not restarted."""
        keys = self._inputs_of(task)
        slot = self.nodes.get(task.node or "")
        if keys and all(k in done for k in keys):
            # A copy of it (or it of the original) finished first: it only needs killing.
            if slot is not None:
                self._spawn(kill_task(self.pool, slot.node, task.id, self.options.op_timeout))
                slot.cleanup.append(task.id)
            self._set(task, state=TaskState.CANCELLED, error="another attempt finished first")
            return
        if slot is None:
            self._set(task, state=TaskState.QUEUED, node=None, error="its node is not usable now")
            return
        live = [k for k in keys if k not in done]
        copy_of = None if task.duplicate_of is None else "an earlier run"
        self.dispatcher.adopt(slot.node.name, live, now, copy_of)
        for key in live:
            self.attempt[(key, slot.node.name)] = task.id
        slot.active.add(task.id)
        # In memory only: the poll tells whether it really started or finished; a finished
        # one is downloaded again (storing is idempotent), a lost one placed again.
        task.state = TaskState.RUNNING
        self.adopted.add(task.id)
        self.progress[task.id] = Progress(0, now)
        slot.next_poll = 0.0
        self.event(task.job_id, f"task {task.id} on {slot.node.name}: reattached after a restart")

    # -- placement --------------------------------------------------------------------------

    def _place(self) -> None:
        for assignment in self.dispatcher.assign(time.time()):
            self._start_assignment(assignment)
        if self.new_tasks:
            # Write-ahead: the uploads start at the next await, after the ledger knows these
            # tasks; a crash before that left work running on nodes that nobody collects.
            self.flush()

    def _start_assignment(self, assignment: Assignment) -> None:
        keys = list(assignment.task_ids)
        job_id = self.dispatcher_job(keys[0])
        run = self.jobs[job_id]
        slot = self.nodes[assignment.node]
        items = [run.items[k] for k in keys]
        if assignment.duplicate_of is not None:
            original = self.holder.get(keys[0])
            task = self._new_task(job_id, items, duplicate_of=original)
            self.event(
                job_id,
                f"task {task.id} on {slot.node.name}: a copy of {original} "
                f"(late on {assignment.duplicate_of}); the first result wins",
            )
        else:
            task = self._reuse_or_create(job_id, keys, items, slot)
        for key in keys:
            self.attempt[(key, slot.node.name)] = task.id
        self._set(task, state=TaskState.PLACED, node=slot.node.name, error=None)
        slot.active.add(task.id)
        self._spawn(self._start(task, slot))

    def dispatcher_job(self, key: str) -> str:
        """The job of a scheduler task id."""
        return key.split("/", 1)[0]

    def _reuse_or_create(
        self, job_id: str, keys: list[str], items: list[dict[str, Any]], slot: NodeSlot
    ) -> Task:
        """The queued task holding exactly these inputs, or a new one taking them over."""
        # Not one abandoned on that node: its old attempt may still run in the same directory.
        holders = {self.holder[k] for k in keys if k in self.holder}
        if len(holders) == 1:
            old = self.tasks[holders.pop()]
            same = sorted(self._inputs_of(old)) == sorted(keys)
            if old.state == TaskState.QUEUED and same and old.id not in slot.abandoned:
                return old
        task = self._new_task(job_id, items)
        moved = set(keys)
        for key in keys:
            previous = self.holder.get(key)
            self.holder[key] = task.id
            if previous is None or previous == task.id:
                continue
            old = self.tasks[previous]
            left = [i for i in old.inputs if task_key(old.job_id, i["name"]) not in moved]
            if len(left) != len(old.inputs):
                if left:
                    self._set(old, inputs=left)
                else:
                    self._set(
                        old,
                        inputs=[],
                        moved_to=task.id,
                        state=TaskState.CANCELLED,
                        error=f"its inputs were placed again in task {task.id}",
                    )
        return task

    def _spawn(self, coroutine: Any) -> None:
        worker = asyncio.ensure_future(coroutine)
        self.workers.add(worker)
        worker.add_done_callback(self._worker_done)

    def _worker_done(self, worker: asyncio.Task[None]) -> None:
        self.workers.discard(worker)
        self.wakeup.set()
        if not worker.cancelled() and worker.exception() is not None and self.crashed is None:
            # A bug: raised from a callback it would only be logged, and the job would wait
            # for ever on a task that nothing drives any more. The run loop re-raises it.
            self.crashed = worker.exception()

    # -- one task's life ----------------------------------------------------------------------

    async def _start(self, task: Task, slot: NodeSlot) -> None:
        run = self.jobs[task.job_id]
        # The attempt first: the state change persists it, so a crash from here on leaves
        # a task whose node is on record.
        attempt = Attempt(node=slot.node.name, started=time.time())
        task.attempts.append(attempt)
        self._set(task, state=TaskState.UPLOADING, started=time.time())
        try:
            payload = run.kind.payload(run.job.params, task.inputs)
            data = remote.pack_task(payload.files, payload.run_sh, payload.runners)
            self.bytes_uploaded[task.job_id] = self.bytes_uploaded.get(task.job_id, 0) + len(data)
        except OSError as exc:
            self._fail(task, slot, f"cannot read an input: {exc.strerror}: {exc.filename}", True)
            return
        try:
            conn = await self.pool.connection(slot.node)
            argv = remote.sh(
                remote.START, slot.node.workdir, task.id, str(self.options.start_wait_steps)
            )
            result = await conn.run(
                argv, stdin=data, timeout=self.options.op_timeout, max_output=1 << 20
            )
        except TransportError as exc:
            self._node_trouble(slot, exc)
            self._requeue(task, slot, f"{exc.reason}: {exc}")
            return
        if task.state != TaskState.UPLOADING or task.attempts[-1] is not attempt:
            slot.abandoned.add(task.id)  # cancelled or placed again meanwhile: not ours now
            return
        slot.last_ok = self.clock()
        if result.exit_status != 0:
            why = result.stderr_text.strip().splitlines()[-1:] or [f"exit {result.exit_status}"]
            self._fail(task, slot, f"upload or start failed: {why[0][:300]}")
            return
        pid = next(
            (line[4:] for line in result.stdout_text.splitlines() if line.startswith("pid=")), ""
        )
        self._set(
            task,
            state=TaskState.RUNNING,
            pid=int(pid) if pid.isdigit() else None,
            remote_dir=f"{slot.node.workdir}/{remote.TASKS_DIR}/{task.id}",
        )
        now = time.time()
        self.progress[task.id] = Progress(0, now)
        self.dispatcher.task_started(self._inputs_of(task)[0], slot.node.name, now)
        report = remote.parse_poll(
            result.stdout_text, [task.id], self.options.max_file, self.options.max_task_output
        )
        if report[task.id].state == "finished":
            await self._finished(task, slot, report[task.id])
        else:
            slot.next_poll = min(slot.next_poll or math.inf, self.clock() + self.options.poll_min)
            slot.poll_interval = self.options.poll_min

    def _computed(self, task: Task, slot: NodeSlot, count: int) -> None:
        """The node says `count` of the task's inputs are done: tell the scheduler (timing only)."""
        mark = self.progress.setdefault(task.id, Progress(0, time.time()))
        keys = self._inputs_of(task)
        count = min(count, len(keys))
        if count <= mark.done:
            return
        now = time.time()
        share = max(1e-3, now - mark.since) / (count - mark.done)
        for key in keys[mark.done : count]:
            self.dispatcher.task_computed(key, slot.node.name, share, now)
        mark.done, mark.since = count, now
        if count < len(keys):
            self.dispatcher.task_started(keys[count], slot.node.name, now)

    async def _finished(self, task: Task, slot: NodeSlot, report: remote.PollReport) -> None:
        if task.state != TaskState.RUNNING:
            return
        keys = self._inputs_of(task)
        if report.exit_status == 0 and not report.error:
            self._computed(task, slot, len(keys))  # timed before the download
        rival = next(
            (self.claimed[k] for k in keys if self.claimed.get(k, task.id) != task.id), None
        )
        if rival is not None or any(
            self.dispatcher.task_status(k) is TaskStatus.DONE for k in keys
        ):
            self._lost_race(task, slot, rival)
            return
        self._set(task, state=TaskState.DOWNLOADING, exit_status=report.exit_status)
        if report.error or report.exit_status != 0:
            reason = report.error or f"exit status {report.exit_status}"
            if not report.error:
                tail = await self._stderr_tail(task, slot)
                reason += f": {tail}" if tail else ""
            self._fail(task, slot, reason)
            slot.cleanup.append(task.id)
            return
        for key in keys:
            self.claimed[key] = task.id  # first result wins: a rival finishing now is a loser
        manifest = report.manifest or []
        results = self.jobs[task.job_id].results
        try:
            if manifest:
                conn = await self.pool.connection(slot.node)
                argv = remote.sh(
                    remote.FETCH, slot.node.workdir, task.id, *(e.name for e in manifest)
                )
                total = sum(e.size for e in manifest)
                result = await conn.run(
                    argv,
                    timeout=self.options.op_timeout + total / 5e6,
                    # room for the reason on stderr even when the outputs are tiny
                    max_output=max(total + 1, 4096),
                )
                if result.exit_status != 0 or result.truncated or len(result.stdout) != total:
                    why = (
                        result.stderr_text.strip()[:200]
                        or f"got {len(result.stdout)} of {total} bytes"
                    )
                    self._unclaim(keys)
                    self._fail(task, slot, f"download failed: {why}")
                    slot.cleanup.append(task.id)
                    return
                offset = 0
                for entry in manifest:
                    store_output(
                        results, entry, result.stdout[offset : offset + entry.size], task.id
                    )
                    offset += entry.size
        except TransportError as exc:
            self._unclaim(keys)
            self._node_trouble(slot, exc)
            self._requeue(task, slot, f"download: {exc.reason}: {exc}")
            return
        except ResultError as exc:
            self._unclaim(keys)
            self._fail(task, slot, str(exc))
            slot.cleanup.append(task.id)
            return
        slot.last_ok = self.clock()
        finished = time.time()
        if task.attempts:  # a ledger written before attempts were saved with the state
            task.attempts[-1].finished = finished
        outputs = [{"name": e.name, "size": e.size, "sha256": e.sha256} for e in manifest]
        self._set(task, state=TaskState.DONE, outputs=outputs, finished=finished, error=None)
        slot.active.discard(task.id)
        slot.cleanup.append(task.id)
        for key in keys:
            self.attempt.pop((key, slot.node.name), None)
            for loser in self.dispatcher.task_finished(key, slot.node.name, 1e-3, finished):
                self._beaten(key, loser, slot.node.name)
            self._settle_holder(key, task)
        self._progress()

    def _unclaim(self, keys: list[str]) -> None:
        for key in keys:
            self.claimed.pop(key, None)

    def _lost_race(self, task: Task, slot: NodeSlot, rival: str | None) -> None:
        """The task ended after another attempt of its inputs: its result is not stored."""
        slot.active.discard(task.id)
        slot.cleanup.append(task.id)
        for key in self._inputs_of(task):
            self.attempt.pop((key, slot.node.name), None)
        self._set(
            task,
            state=TaskState.CANCELLED,
            finished=time.time(),
            error=f"task {rival} finished first" if rival else "another attempt finished first",
        )

    def _beaten(self, key: str, node: str, winner_node: str) -> None:
        """A copy won: kill the attempt on `node` (its process group) and keep nothing of it."""
        task_id = self.attempt.pop((key, node), None)
        if task_id is None:
            return
        loser = self.tasks[task_id]
        slot = self.nodes[node]
        if loser.state in ACTIVE:
            self._spawn(kill_task(self.pool, slot.node, loser.id, self.options.op_timeout))
            slot.active.discard(loser.id)
            slot.cleanup.append(loser.id)
            self._set(
                loser,
                state=TaskState.CANCELLED,
                finished=time.time(),
                error=f"a copy on {winner_node} finished first",
            )
            self.event(loser.job_id, f"task {loser.id} on {node}: killed, a copy won the race")

    def _settle_holder(self, key: str, winner: Task) -> None:
        """An input is home: a queued task still holding it lets it go."""
        holder_id = self.holder.get(key)
        if holder_id is None or holder_id == winner.id:
            return
        holder = self.tasks[holder_id]
        if holder.state != TaskState.QUEUED:
            return
        left = [i for i in holder.inputs if task_key(holder.job_id, i["name"]) != key]
        if left:
            self._set(holder, inputs=left)
        else:
            self._set(
                holder,
                inputs=[],
                moved_to=winner.id,
                state=TaskState.CANCELLED,
                error=f"its input was done by task {winner.id}",
            )

    async def _stderr_tail(self, task: Task, slot: NodeSlot) -> str:
        """The last line the task wrote on stderr, for its error message."""
        with contextlib.suppress(TransportError):
            conn = await self.pool.connection(slot.node)
            argv = remote.sh(remote.ERROR_TAIL, slot.node.workdir, task.id)
            result = await conn.run(argv, timeout=self.options.op_timeout, max_output=1 << 12)
            lines = [line for line in result.stdout_text.splitlines() if line.strip()]
            return lines[-1][:300] if lines else ""
        return ""

    def _fail(self, task: Task, slot: NodeSlot, reason: str, for_good: bool = False) -> None:
        """The task failed on the node: its inputs go elsewhere, or fail after two nodes."""
        slot.active.discard(task.id)
        if task.attempts and task.attempts[-1].node == slot.node.name:
            task.attempts[-1].error = reason
            task.attempts[-1].finished = time.time()
        else:
            task.attempts.append(Attempt(node=slot.node.name, error=reason, finished=time.time()))
        now = time.time()
        failed: list[dict[str, Any]] = []
        statuses = []
        for item in task.inputs:
            key = task_key(task.job_id, item["name"])
            self.attempt.pop((key, slot.node.name), None)
            status = self.dispatcher.task_failed(key, slot.node.name, reason, now)
            if for_good and status is TaskStatus.QUEUED:
                self.dispatcher.fail_task(key, reason)
                status = TaskStatus.FAILED
            statuses.append(status)
            if status is TaskStatus.FAILED:
                failed.append(item)
        reasons = "; ".join(f"{a.node}: {a.error}" for a in task.attempts if a.error)
        if task.duplicate_of is not None or all(s is TaskStatus.RUNNING for s in statuses):
            # A copy failed, or the original failed while a copy runs: the other goes on.
            self._set(task, state=TaskState.FAILED, error=reasons, finished=now)
            self.event(task.job_id, f"task {task.id} failed on {slot.node.name}: {reason}")
        elif len(failed) == len(task.inputs):
            self._set(task, state=TaskState.FAILED, error=reasons, finished=now)
            self.event(task.job_id, f"task {task.id} failed: {reasons}")
        else:
            if failed:
                self._split_failed(task, failed, reasons, now)
            self._set(task, state=TaskState.QUEUED, node=None, pid=None, error=reason)
            self.event(
                task.job_id,
                f"task {task.id} failed on {slot.node.name}: {reason}; placing it elsewhere",
            )
        self._progress()
        self.wakeup.set()

    def _split_failed(
        self, task: Task, failed: list[dict[str, Any]], reasons: str, now: float
    ) -> None:
        """Inputs of a task that failed for good move to a failed task of their own."""
        gone = {i["name"] for i in failed}
        ended = self._new_task(
            task.job_id,
            failed,
            state=TaskState.FAILED,
            error=reasons,
            attempts=list(task.attempts),
            finished=now,
        )
        for item in failed:
            self.holder[task_key(task.job_id, item["name"])] = ended.id
        self._set(task, inputs=[i for i in task.inputs if i["name"] not in gone])

    def _requeue(self, task: Task, slot: NodeSlot, reason: str) -> None:
        """The node let the task down (not the task itself): place its inputs again."""
        slot.active.discard(task.id)
        slot.abandoned.add(task.id)
        if task.attempts:
            task.attempts[-1].error = task.attempts[-1].error or f"node lost: {reason}"
        now = time.time()
        for key in self._inputs_of(task):
            self.attempt.pop((key, slot.node.name), None)
            self.dispatcher.task_returned(key, slot.node.name, now)
        if task.duplicate_of is not None:
            self._set(task, state=TaskState.CANCELLED, error=f"node lost: {reason}")
        else:
            self._set(task, state=TaskState.QUEUED, node=None, pid=None, error=reason)
        self.event(task.job_id, f"task {task.id} taken back from {slot.node.name}: {reason}")
        self.wakeup.set()

    def _node_trouble(self, slot: NodeSlot, exc: TransportError) -> None:
        if self.clock() - slot.last_ok > self.options.lease or exc.reason != "timeout":
            self._lose_node(slot, f"{exc.reason}: {exc}")

    def _lose_node(self, slot: NodeSlot, reason: str) -> None:
        if slot.lost:
            return
        slot.lost = True
        self.dispatcher.node_lost(slot.node.name, time.time())
        for run in self.jobs.values():
            if any(self.tasks[t].job_id == run.job.id for t in slot.active):
                self.event(
                    run.job.id, f"node {slot.node.name} lost ({reason}); its tasks go elsewhere"
                )
        for task_id in list(slot.active):
            self._requeue(self.tasks[task_id], slot, reason)

    # -- polling ------------------------------------------------------------------------------

    async def _poll(self, slot: NodeSlot) -> None:
        running = [t for t in slot.active if self.tasks[t].state == TaskState.RUNNING]
        try:
            conn = await self.pool.connection(slot.node)
            if slot.cleanup:
                done, slot.cleanup = slot.cleanup, []
                await conn.run(
                    remote.sh(remote.CLEANUP, slot.node.workdir, *done),
                    timeout=self.options.op_timeout,
                )
            if not running:
                return
            result = await conn.run(
                remote.sh(remote.POLL, slot.node.workdir, *running),
                timeout=min(self.options.op_timeout, self.options.lease),
                max_output=16 << 20,
            )
        except TransportError as exc:
            if self.clock() - slot.last_ok > self.options.lease:
                self._lose_node(slot, f"{exc.reason}: {exc}")
            else:
                await self.pool.discard(slot.node)
            return
        finally:
            slot.polling = False
        slot.last_ok = self.clock()
        reports = remote.parse_poll(
            result.stdout_text, running, self.options.max_file, self.options.max_task_output
        )
        finished = [r for r in reports.values() if r.state == "finished"]
        for report in reports.values():
            task = self.tasks[report.task_id]
            if report.state == "lost":
                slot.cleanup.append(task.id)  # whatever it left (an upload cut short)
            if task.state != TaskState.RUNNING:
                continue  # ended meanwhile (a copy won, a cancel)
            if report.state == "running":
                self._computed(task, slot, report.progress)
            elif report.state == "lost" and report.task_id in self.adopted:
                self._requeue(task, slot, "not started before the restart")
            elif report.state == "lost":
                self._fail(task, slot, report.error or "runner lost")
        slot.poll_interval = (
            self.options.poll_min
            if finished
            else min(self.options.poll_max, slot.poll_interval * 2)
        )
        slot.next_poll = self.clock() + slot.poll_interval
        for report in finished:
            self._spawn(self._finished(self.tasks[report.task_id], slot, report))

    def _due_polls(self) -> None:
        now = self.clock()
        for slot in self.nodes.values():
            needs = slot.cleanup or any(
                self.tasks[t].state == TaskState.RUNNING for t in slot.active
            )
            if slot.lost or slot.polling or not needs:
                continue
            if slot.cleanup and not slot.active:
                slot.next_poll = min(slot.next_poll or now, now)
            if now >= slot.next_poll:
                slot.polling = True
                self._spawn(self._poll(slot))

    async def _reprobe(self) -> None:
        """Fresh facts (load, disk, reachability) for the scheduler during a long run."""
        if self.prober is None:
            return
        nodes = [s.node for s in self.nodes.values()]
        probed = await self.prober(nodes)
        local = local_inputs(r.job for r in self.jobs.values())
        self.dispatcher.update_nodes(
            [
                node_state(self.nodes[p.name].node, p, local.get(p.name, frozenset()))
                for p in probed
            ],
            time.time(),
        )
        for result in probed:
            slot = self.nodes[result.name]
            if result.reachable and slot.lost:
                slot.lost = False  # back: the scheduler may use it again
                slot.last_ok = self.clock()
                await self._reap(slot)

    async def _reap(self, slot: NodeSlot) -> None:
        """Kill what was abandoned on a node that answers again, and clean it up."""
        gone, slot.abandoned = slot.abandoned, set()
        timeout = self.options.op_timeout
        await asyncio.gather(*(kill_task(self.pool, slot.node, t, timeout) for t in sorted(gone)))
        slot.cleanup.extend(sorted(gone))

    # -- ends: cancel, stuck work ---------------------------------------------------------------

    def _cancel_requested(self) -> list[RunJob]:
        found = []
        for run in self.jobs.values():
            if not run.cancelled and self.ledger.load(run.job.id)[0].cancelled:
                found.append(run)
        return found

    async def _cancel(self, run: RunJob) -> None:
        """Kill every process group of the job and end its tasks as cancelled."""
        run.cancelled = True
        self.dispatcher.cancel_job(run.job.id, time.time())
        kills = []
        for slot in self.nodes.values():
            for task_id in list(slot.active):
                if self.tasks[task_id].job_id == run.job.id:
                    slot.active.discard(task_id)
                    kills.append(kill_task(self.pool, slot.node, task_id, self.options.op_timeout))
        await asyncio.gather(*kills, return_exceptions=True)
        for task in self.tasks.values():
            if task.job_id == run.job.id and not task.state.final:
                self._set(task, state=TaskState.CANCELLED, finished=time.time())
        self.event(run.job.id, "cancelled")
        self.flush()

    def _stuck(self) -> None:
        """Nothing runs and nothing can be placed: fail the queued inputs, each with why."""
        plan = self.dispatcher.plan(time.time())
        for key, why in plan.unplaceable.items():
            job_id = self.dispatcher_job(key)
            run = self.jobs[job_id]
            item = run.items[key]
            if item.get("node"):
                why = f"its data is on {item['node']}, which is not reachable"
            elif why == "no eligible node":
                why = "no selected node can run it"
            self.dispatcher.fail_task(key, why)
        self._settle_ended()

    def _settle_ended(self) -> None:
        """Inputs the scheduler gave up on, not in any ended task: record them as failed."""
        for run in self.jobs.values():
            if run.cancelled:
                continue
            stray: dict[str, list[dict[str, Any]]] = {}
            for key, item in run.items.items():
                if (
                    key not in self.known
                    or self.dispatcher.task_status(key) is not TaskStatus.FAILED
                ):
                    continue
                holder = self.tasks.get(self.holder.get(key, ""))
                if holder is not None and holder.state.final:
                    continue
                why = self._why_failed(run, key)
                if holder is not None and holder.state == TaskState.QUEUED:
                    others = [i for i in holder.inputs if i["name"] != item["name"]]
                    if others:
                        self._set(holder, inputs=others)
                    else:
                        tried = "; ".join(
                            f"{a.node}: {a.error}" for a in holder.attempts if a.error
                        )
                        self._set(holder, state=TaskState.FAILED, error=tried or why)
                        continue
                stray.setdefault(why, []).append(item)
            for why, items in stray.items():
                task = self._new_task(run.job.id, items, state=TaskState.FAILED, error=why)
                for item in items:
                    self.holder[task_key(run.job.id, item["name"])] = task.id
                self.event(run.job.id, f"{len(items)} input(s) failed: {why}")

    def _why_failed(self, run: RunJob, key: str) -> str:
        failures = self.dispatcher.task_failures(key)
        if failures:
            return "; ".join(f"{n}: {w}" if n else w for n, w in failures.items())
        if self.dispatcher.job_status(run.job.id) is JobStatus.FAILED:
            return "; ".join(self.dispatcher.explain(time.time(), run.job.id).jobs[0].reasons)
        return "not run"

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> dict[str, JobState]:
        """Drive the jobs until every task has ended (or the jobs are cancelled)."""
        self._setup()
        self._progress()
        last_cancel_check = 0.0
        while True:
            if self.crashed is not None:
                raise self.crashed
            now = self.clock()
            if now - last_cancel_check > 1.0:
                last_cancel_check = now
                for run in self._cancel_requested():
                    await self._cancel(run)
            self._strand()
            self._place()
            self._due_polls()
            if self.prober is not None and now - self.last_probe > self.options.reprobe_s:
                self.last_probe = now
                self._spawn(self._reprobe())
            if now - self.last_flush >= self.options.flush_interval:
                self.flush()
            if not self.workers:
                self._orphans()
            busy = self.workers or any(s.active for s in self.nodes.values())
            if not busy:
                if self.dispatcher.finished or all(r.cancelled for r in self.jobs.values()):
                    break
                self._stuck()
                if self.dispatcher.finished:
                    break
            self.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self._sleep_for())
        self._settle_ended()
        await self._final_cleanup()
        self.flush()
        states = {}
        for run in self.jobs.values():
            tasks = [t for t in self.tasks.values() if t.job_id == run.job.id]
            outputs = [
                {"task": t.id, "node": t.node, **o}
                for t in tasks
                if t.state == TaskState.DONE
                for o in t.outputs
            ]
            if outputs or tasks:
                write_manifest(run.results, {"id": run.job.id, "kind": run.job.kind}, outputs)
            states[run.job.id] = job_state(run.job, tasks)
        return states

    def _orphans(self) -> None:
        """Tasks held by a node that nothing drives (no worker, no poll): place them again."""
        # A safety net: every live task has a worker (upload, download) or is polled.
        for slot in self.nodes.values():
            for task_id in list(slot.active):
                task = self.tasks[task_id]
                if task.state.final:
                    slot.active.discard(task_id)
                elif slot.lost or task.state != TaskState.RUNNING:
                    self._requeue(task, slot, f"lost track of it ({task.state.value})")

    def _strand(self) -> None:
        """Fail data-local inputs whose node is gone: no other node has their data."""
        gone = {name for name, slot in self.nodes.items() if slot.lost}
        for run in self.jobs.values():
            for key, item in run.items.items():
                pinned = item.get("node")
                if not pinned or key not in self.known:
                    continue
                if pinned not in gone and pinned in self.nodes:
                    continue
                if self.dispatcher.task_status(key) is TaskStatus.QUEUED:
                    self.dispatcher.fail_task(
                        key, f"its data is on {pinned}, which is not reachable"
                    )

    def _sleep_for(self) -> float:
        now = self.clock()
        waits = [self.options.flush_interval]
        for slot in self.nodes.values():
            if slot.active and not slot.lost and not slot.polling:
                waits.append(max(0.0, slot.next_poll - now))
        return max(0.005, min(waits))

    async def _final_cleanup(self) -> None:
        # Abandoned attempts first (a lost node may answer by now), then cleanups; the whole
        # is bounded, and what could not be killed is named in the events.
        live = [s for s in self.nodes.values() if not s.lost]
        for slot in self.nodes.values():
            for task_id in sorted(slot.abandoned):
                task = self.tasks[task_id]
                self.event(task.job_id, f"task {task_id} abandoned on {slot.node.name}: killing it")

        async def finish() -> None:
            await asyncio.gather(
                *(self._reap(s) for s in self.nodes.values() if s.abandoned),
                return_exceptions=True,
            )
            polls = []
            for slot in live:
                if slot.cleanup:
                    slot.polling = True
                    polls.append(self._poll(slot))
            await asyncio.gather(*polls, return_exceptions=True)

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(finish(), 2 * self.options.op_timeout)


async def kill_task(pool: ConnectionPool, node: Node, task_id: str, timeout: float) -> None:
    """Kill a task's process group on its node (best effort)."""
    with contextlib.suppress(TransportError):
        conn = await pool.connection(node)
        await conn.run(
            remote.sh(remote.KILL, node.workdir, remote.check_task_id(task_id)), timeout=timeout
        )
