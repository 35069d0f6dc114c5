"""What an executor run knows and how it records it.

Its options, what it knows of each node and job, and the bookkeeping every part of the
executor shares: batched ledger changes and events, new tasks, progress, worker tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgectl.facts.store import ProbeResult
from edgectl.inventory.model import Node
from edgectl.jobs.kinds import Kind, get_kind
from edgectl.jobs.ledger import Ledger
from edgectl.jobs.model import Job, Task, TaskState, new_id
from edgectl.jobs.placement import scheduler_config, task_key
from edgectl.jobs.results import results_dir
from edgectl.scheduler import Dispatcher, NodeState, SchedulerConfig, TaskStatus
from edgectl.scheduler.rates import background_load, gate_size
from edgectl.transport import ConnectionPool

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
    fetch_batch: int = 16 * 1024 * 1024  # outputs up to this much come in one exec, in memory
    flush_interval: float = 0.2
    reprobe_s: float = 60.0  # facts (load, disk) are refreshed this often during a run
    given_up_age: int = 600  # s: a cleanup removes markers of given-up attempts this old
    # Core tokens a task waits for on its node once uploaded (see runners/task.sh). None:
    # the node's free cores at its last probe (rounded up), and none for a favoured task
    # (it runs at once, niced less) unless a task of a higher-priority job is on the node;
    # a number: that many for every task (0: no gate).
    gate: int | None = None
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
    cleanup: list[str] = field(default_factory=list)  # attempt directories (Task.run_name)
    polling: bool = False
    # Attempts taken back from the node while it did not answer: they may still run there,
    # and are killed (or given up, if not started) once it answers again or at the end.
    abandoned: set[str] = field(default_factory=set)
    starting: dict[str, float] = field(default_factory=dict)  # attempt -> first "W" report


@dataclass
class Progress:
    """How far a running task got: inputs reported computed, and since when."""

    done: int = 0
    since: float = 0.0


@dataclass
class RunJob:
    """A job driven by this executor."""

    job: Job
    kind: Kind
    results: Path
    items: dict[str, dict[str, Any]]  # scheduler task id -> input
    cancelled: bool = False


class RunState:
    """What an executor run knows (nodes, tasks, who holds which input) and how it records it."""

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
        # Per node, its free cores as the scheduler saw them at the last probe: the gate size.
        self.free_cores: dict[str, int] = {}
        # Attempts (by directory) the scheduler was told began computing: told once each.
        self.began: set[str] = set()

    def _update_nodes(self, states: list[NodeState], now: float) -> None:
        """Give the scheduler fresh facts of some nodes, and note their free cores."""
        self.dispatcher.update_nodes(states, now)
        for state in states:
            slot = self.nodes.get(state.name)
            if slot is None or not state.reachable:
                continue
            # What the scheduler counts too: load not caused by our computing tasks.
            ours = sum(
                1
                for t in slot.active
                if self.tasks[t].state == TaskState.RUNNING
                and self.tasks[t].run_name() in self.began
            )
            background = background_load(state.load1, ours)
            self.free_cores[state.name] = gate_size(state.cores, background)

    def _gate_for(self, node: str, task: Task, favoured: bool) -> int:
        """Core tokens a new attempt of `task` on `node` waits for (0: it computes at once).

        A favoured one passes at once, unless a task of a job of higher priority is on the
        node: it then waits at the gate (first in line among its job's peers).
        """
        if self.options.gate is not None:
            return max(0, self.options.gate)
        if favoured and not self._outranked(node, task):
            return 0
        return self.free_cores.get(node, 0)

    def _outranked(self, node: str, task: Task) -> bool:
        """Whether a task of a job of higher priority than `task`'s is active on the node."""
        slot = self.nodes.get(node)
        mine = self.jobs[task.job_id].job.priority
        return slot is not None and any(
            self.jobs[self.tasks[t].job_id].job.priority > mine
            for t in slot.active
            if t in self.tasks and self.tasks[t].job_id in self.jobs
        )

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

    def _release(self, task: Task, gone: set[str], to: str, why: str, **fields: Any) -> None:
        """These inputs (by name) now belong to task `to`: the task keeps the rest, or ends
        cancelled, holding nothing, its inputs moved to `to`."""
        left = [i for i in task.inputs if i["name"] not in gone]
        if left:
            self._set(task, inputs=left)
        else:
            self._set(task, inputs=[], moved_to=to, state=TaskState.CANCELLED, error=why, **fields)

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

    def dispatcher_job(self, key: str) -> str:
        """The job of a scheduler task id."""
        return key.split("/", 1)[0]

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
