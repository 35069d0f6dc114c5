"""The executor: places tasks, uploads and starts them detached, polls, pulls results home.

One process drives a job at a time (a lock file per job). All state changes go through the
ledger in batches; after a crash `job resume` rebuilds the picture from the ledger and asks
the nodes what became of each task, so nothing is lost or stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgectl.errors import EdgectlError
from edgectl.inventory.model import Node
from edgectl.jobs import remote
from edgectl.jobs.kinds import get_kind
from edgectl.jobs.ledger import Ledger
from edgectl.jobs.model import Attempt, Job, JobState, Task, TaskState, job_state, new_id
from edgectl.jobs.results import ResultError, results_dir, store_output, write_manifest
from edgectl.transport import ConnectionPool, TransportError

ACTIVE = (TaskState.PLACED, TaskState.UPLOADING, TaskState.RUNNING, TaskState.DOWNLOADING)


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
    max_attempt_nodes: int = 2  # a task that fails on this many nodes has failed
    flush_interval: float = 0.2


@dataclass
class NodeSlot:
    """What the executor knows of one node during a run."""

    node: Node
    slots: int
    active: set[str] = field(default_factory=set)
    last_ok: float = 0.0
    next_poll: float = 0.0
    poll_interval: float = 0.1
    lost: bool = False
    cleanup: list[str] = field(default_factory=list)
    polling: bool = False
    rate: float = 0.0  # inputs per second, moving average


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


class Executor:
    """Drives one job to its end over a connection pool."""

    def __init__(
        self,
        home: Path,
        ledger: Ledger,
        job: Job,
        tasks: list[Task],
        nodes: list[Node],
        slots: dict[str, int],
        pool: ConnectionPool,
        options: ExecOptions | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.home, self.ledger, self.job, self.pool = home, ledger, job, pool
        self.options = options or ExecOptions()
        self.kind = get_kind(job.kind)
        self.on_progress = on_progress
        self.clock = clock
        self.tasks = {t.id: t for t in tasks}
        now = clock()
        self.nodes = {n.name: NodeSlot(n, max(1, slots.get(n.name, 1)), last_ok=now) for n in nodes}
        assigned = {i["name"] for t in tasks for i in t.inputs}
        self.pending = [i for i in job.params.get("inputs", []) if i["name"] not in assigned]
        self.changes: dict[str, dict[str, Any]] = {}
        self.new_tasks: list[Task] = []
        self.events: list[tuple[str, str]] = []
        self.last_flush = 0.0
        self.results = results_dir(home, job.id)
        self.wakeup = asyncio.Event()
        self.workers: set[asyncio.Task[None]] = set()
        self.adopted: set[str] = set()
        self.bytes_uploaded = 0
        self.crashed: BaseException | None = None

    # -- bookkeeping ------------------------------------------------------------------------

    def _set(self, task: Task, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(task, key, value)
        change = self.changes.setdefault(task.id, {})
        change.update({k: getattr(task, k) for k in fields})
        if "attempts" in fields or "state" in fields:
            change["attempts"] = list(task.attempts)

    def _event(self, text: str) -> None:
        self.events.append((self.job.id, text))

    def flush(self) -> None:
        """Write the batched changes (one write) and pick up a cancel from elsewhere."""
        if self.changes or self.new_tasks or self.events:
            stored = self.ledger.apply(self.changes, self.new_tasks, self.events)
            for task_id, task in stored.items():
                mine = self.tasks.get(task_id)
                if mine is not None and task.state != mine.state and task.state.final:
                    self.tasks[task_id] = task  # someone else ended it (cancel): theirs wins
            self.changes, self.new_tasks, self.events = {}, [], []
        self.last_flush = self.clock()

    def _done_count(self) -> tuple[int, int]:
        primary = [t for t in self.tasks.values() if t.duplicate_of is None]
        total = len(primary) + len(self.pending)
        return sum(t.state.final for t in primary), total

    # -- placement --------------------------------------------------------------------------

    def _free_nodes(self) -> list[NodeSlot]:
        free = [s for s in self.nodes.values() if not s.lost and len(s.active) < s.slots]
        # Faster nodes first (observed rate, then slots): they take the larger chunks.
        return sorted(free, key=lambda s: (-s.rate, -s.slots, s.node.name))

    def _place(self) -> None:
        queued = [t for t in self.tasks.values() if t.state == TaskState.QUEUED]
        total_slots = sum(s.slots for s in self.nodes.values() if not s.lost) or 1
        for slot in self._free_nodes():
            while len(slot.active) < slot.slots:
                task = next(
                    (t for t in queued if slot.node.name not in {a.node for a in t.attempts}), None
                )
                if task is not None:
                    queued.remove(task)
                elif chunk := self._take_chunk(slot.node.name, total_slots):
                    task = Task(id=new_id("t"), job_id=self.job.id, inputs=chunk)
                    self.tasks[task.id] = task
                    self.new_tasks.append(task)
                else:
                    break
                self._set(task, state=TaskState.PLACED, node=slot.node.name, error=None)
                slot.active.add(task.id)
                self._spawn(self._start(task, slot))
        if self.new_tasks:
            # Write-ahead: the uploads start at the next await, after the ledger knows these
            # tasks; a crash before that left work running on nodes that nobody collects.
            self.flush()

    def _may_run(self, task: Task, node: str) -> bool:
        """A queued task may go to a node it has not failed on and whose data it needs."""
        if any(
            a.node == node and a.error and not a.error.startswith("node lost")
            for a in task.attempts
        ):
            return False
        return all(i.get("node") in (None, node) for i in task.inputs)

    def _strand(self) -> None:
        """Fail the data-local work whose node is gone: no other node has its data."""
        gone = {name for name, slot in self.nodes.items() if slot.lost}
        for item in [
            i
            for i in self.pending
            if i.get("node") and (i["node"] in gone or i["node"] not in self.nodes)
        ]:
            self.pending.remove(item)
            error = f"its data is on {item['node']}, which is not reachable"
            task = Task(
                id=new_id("t"),
                job_id=self.job.id,
                inputs=[item],
                state=TaskState.FAILED,
                error=error,
            )
            self.tasks[task.id] = task
            self.new_tasks.append(task)
        for task in self.tasks.values():
            pinned = {str(i["node"]) for i in task.inputs if i.get("node")}
            if task.state == TaskState.QUEUED and pinned and pinned & gone:
                self._set(
                    task,
                    state=TaskState.FAILED,
                    error=f"its data is on {', '.join(sorted(pinned))}, which is not reachable",
                )

    def _take_chunk(self, node: str, total_slots: int) -> list[dict[str, Any]]:
        """The next inputs for a free slot of `node`: its own data first, never another node's.

        Guided self-scheduling: a chunk is the remaining inputs over twice the slots, so
        chunks shrink as the work runs out and the tail stays short. An input that already
        lives on a node (`node` set, `--remote-path`) is only ever given to that node.
        """
        mine = [i for i in self.pending if i.get("node") == node]
        free = [i for i in self.pending if not i.get("node")]
        candidates = mine or free
        if not candidates:
            return []
        size = max(1, math.ceil(len(candidates) / (2 * total_slots)))
        chunk = candidates[:size]
        taken = {id(i) for i in chunk}
        self.pending = [i for i in self.pending if id(i) not in taken]
        return chunk

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
        # The attempt first: the state change persists it, so a crash from here on leaves
        # a task whose node is on record.
        task.attempts.append(Attempt(node=slot.node.name, started=time.time()))
        self._set(task, state=TaskState.UPLOADING, started=time.time())
        try:
            payload = self.kind.payload(self.job.params, task.inputs)
            data = remote.pack_task(payload.files, payload.run_sh, payload.runners)
            self.bytes_uploaded += len(data)
        except OSError as exc:
            self._fail(
                task, slot, f"cannot read an input: {exc.strerror}: {exc.filename}", retry=False
            )
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
        slot.last_ok = self.clock()
        if result.exit_status != 0:
            why = result.stderr_text.strip().splitlines()[-1:] or [f"exit {result.exit_status}"]
            self._fail(task, slot, f"upload or start failed: {why[0][:300]}")
            return
        pid = next(
            (line[4:] for line in result.stdout_text.splitlines() if line.startswith("pid=")), ""
        )
        remote_dir = f"{slot.node.workdir}/{remote.TASKS_DIR}/{task.id}"
        self._set(
            task,
            state=TaskState.RUNNING,
            pid=int(pid) if pid.isdigit() else None,
            remote_dir=remote_dir,
        )
        report = remote.parse_poll(
            result.stdout_text, [task.id], self.options.max_file, self.options.max_task_output
        )
        if report[task.id].state == "finished":
            await self._finished(task, slot, report[task.id])
        else:
            slot.next_poll = min(slot.next_poll or math.inf, self.clock() + self.options.poll_min)
            slot.poll_interval = self.options.poll_min

    async def _finished(self, task: Task, slot: NodeSlot, report: remote.PollReport) -> None:
        if task.state != TaskState.RUNNING:
            return
        self._set(task, state=TaskState.DOWNLOADING, exit_status=report.exit_status)
        if report.error:
            self._fail(task, slot, report.error)
            slot.cleanup.append(task.id)
            return
        if report.exit_status != 0:
            tail = await self._stderr_tail(task, slot)
            self._fail(
                task, slot, f"exit status {report.exit_status}" + (f": {tail}" if tail else "")
            )
            slot.cleanup.append(task.id)
            return
        manifest = report.manifest or []
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
                    self._fail(task, slot, f"download failed: {why}")
                    slot.cleanup.append(task.id)
                    return
                offset = 0
                for entry in manifest:
                    store_output(
                        self.results, entry, result.stdout[offset : offset + entry.size], task.id
                    )
                    offset += entry.size
        except TransportError as exc:
            self._node_trouble(slot, exc)
            self._requeue(task, slot, f"download: {exc.reason}: {exc}")
            return
        except ResultError as exc:
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
        if task.started:
            seconds = max(1e-3, finished - task.started)
            observed = len(task.inputs) / seconds
            slot.rate = observed if slot.rate == 0 else 0.7 * slot.rate + 0.3 * observed
        self._progress()

    async def _stderr_tail(self, task: Task, slot: NodeSlot) -> str:
        """The last line the task wrote on stderr, for its error message."""
        with contextlib.suppress(TransportError):
            conn = await self.pool.connection(slot.node)
            argv = remote.sh(remote.ERROR_TAIL, slot.node.workdir, task.id)
            result = await conn.run(argv, timeout=self.options.op_timeout, max_output=1 << 12)
            lines = [line for line in result.stdout_text.splitlines() if line.strip()]
            return lines[-1][:300] if lines else ""
        return ""

    def _fail(self, task: Task, slot: NodeSlot, reason: str, retry: bool = True) -> None:
        slot.active.discard(task.id)
        if task.attempts and task.attempts[-1].node == slot.node.name:
            task.attempts[-1].error = reason
            task.attempts[-1].finished = time.time()
        else:
            task.attempts.append(Attempt(node=slot.node.name, error=reason, finished=time.time()))
        failed_on = {a.node for a in task.attempts if a.error}
        others = [s for s in self.nodes.values() if not s.lost and s.node.name not in failed_on]
        if retry and len(failed_on) < self.options.max_attempt_nodes and others:
            self._set(task, state=TaskState.QUEUED, node=None, pid=None, error=reason)
            self._event(
                f"task {task.id} failed on {slot.node.name}: {reason}; placing it elsewhere"
            )
        else:
            reasons = "; ".join(f"{a.node}: {a.error}" for a in task.attempts if a.error)
            self._set(task, state=TaskState.FAILED, error=reasons, finished=time.time())
            self._event(f"task {task.id} failed: {reasons}")
            self._progress()
        self.wakeup.set()

    def _requeue(self, task: Task, slot: NodeSlot, reason: str) -> None:
        slot.active.discard(task.id)
        if task.attempts:
            task.attempts[-1].error = task.attempts[-1].error or f"node lost: {reason}"
        self._set(task, state=TaskState.QUEUED, node=None, pid=None, error=reason)
        self._event(f"task {task.id} taken back from {slot.node.name}: {reason}")
        self.wakeup.set()

    def _node_trouble(self, slot: NodeSlot, exc: TransportError) -> None:
        if self.clock() - slot.last_ok > self.options.lease or exc.reason != "timeout":
            self._lose_node(slot, f"{exc.reason}: {exc}")

    def _lose_node(self, slot: NodeSlot, reason: str) -> None:
        if slot.lost:
            return
        slot.lost = True
        self._event(f"node {slot.node.name} lost ({reason}); its tasks go elsewhere")
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
            if report.state == "lost" and report.task_id in self.adopted:
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

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(*self._done_count())

    # -- resume and cancel ------------------------------------------------------------------------

    def _adopt_active(self) -> None:
        """After a crash: tasks the ledger shows in flight are asked about, not restarted."""
        for task in self.tasks.values():
            if task.state.final:
                # A crash may have come between its end and the removal of its directories.
                for node in {a.node for a in task.attempts} | {task.node or ""}:
                    if node in self.nodes and task.id not in self.nodes[node].cleanup:
                        self.nodes[node].cleanup.append(task.id)
            if task.state not in ACTIVE:
                continue
            slot = self.nodes.get(task.node or "")
            if slot is None:
                self._set(
                    task, state=TaskState.QUEUED, node=None, error="its node is no longer selected"
                )
                continue
            slot.active.add(task.id)
            # In memory only: the poll tells whether it really started or finished; a
            # finished one is downloaded again (storing is idempotent), a lost one requeued.
            task.state = TaskState.RUNNING
            self.adopted.add(task.id)
            slot.next_poll = 0.0
            self._event(f"task {task.id} on {slot.node.name}: reattached after a restart")

    def _cancel_requested(self) -> bool:
        job, _ = self.ledger.load(self.job.id)
        return job.cancelled

    async def _cancel_all(self) -> None:
        for worker in list(self.workers):
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        kills = []
        for slot in self.nodes.values():
            for task_id in list(slot.active):
                kills.append(kill_task(self.pool, slot.node, task_id, self.options.op_timeout))
        await asyncio.gather(*kills, return_exceptions=True)
        for task in self.tasks.values():
            if not task.state.final:
                self._set(task, state=TaskState.CANCELLED, finished=time.time())
        self.pending = []
        self._event("cancelled")
        self.flush()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> JobState:
        """Drive the job until every task has ended (or the job is cancelled)."""
        self._adopt_active()
        self._progress()
        last_cancel_check = 0.0
        while True:
            if self.crashed is not None:
                raise self.crashed
            now = self.clock()
            if now - last_cancel_check > 1.0:
                last_cancel_check = now
                if self._cancel_requested():
                    await self._cancel_all()
                    break
            self._strand()
            self._place()
            self._due_polls()
            if now - self.last_flush >= self.options.flush_interval:
                self.flush()
            if not self.workers and self._all_ended():
                break
            if not self.workers and all(s.lost for s in self.nodes.values()):
                for task in self.tasks.values():
                    if not task.state.final:
                        self._set(
                            task,
                            state=TaskState.FAILED,
                            error=task.error or "no node left to run it",
                        )
                for item in self.pending:
                    task = Task(
                        id=new_id("t"),
                        job_id=self.job.id,
                        inputs=[item],
                        state=TaskState.FAILED,
                        error="no node left to run it",
                    )
                    self.tasks[task.id] = task
                    self.new_tasks.append(task)
                self.pending = []
                break
            self.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self._sleep_for())
        await self._final_cleanup()
        self.flush()
        tasks = list(self.tasks.values())
        outputs = [
            {"task": t.id, "node": t.node, **o}
            for t in tasks
            if t.state == TaskState.DONE
            for o in t.outputs
        ]
        if outputs or tasks:
            write_manifest(self.results, {"id": self.job.id, "kind": self.job.kind}, outputs)
        return job_state(self.job, tasks)

    def _all_ended(self) -> bool:
        return not self.pending and all(t.state.final for t in self.tasks.values())

    def _sleep_for(self) -> float:
        now = self.clock()
        waits = [self.options.flush_interval]
        for slot in self.nodes.values():
            if slot.active and not slot.lost and not slot.polling:
                waits.append(max(0.0, slot.next_poll - now))
        return max(0.005, min(waits))

    async def _final_cleanup(self) -> None:
        jobs = []
        for slot in self.nodes.values():
            if slot.cleanup and not slot.lost:
                jobs.append(self._poll(slot))
        await asyncio.gather(*jobs, return_exceptions=True)


async def kill_task(pool: ConnectionPool, node: Node, task_id: str, timeout: float) -> None:
    """Kill a task's process group on its node (best effort)."""
    with contextlib.suppress(TransportError):
        conn = await pool.connection(node)
        await conn.run(
            remote.sh(remote.KILL, node.workdir, remote.check_task_id(task_id)), timeout=timeout
        )
