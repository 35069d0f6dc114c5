"""Jobs and tasks as plain data, and the task state machine."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class TaskState(str, Enum):
    """Where a task is in its life; every change is persisted."""

    QUEUED = "queued"
    PLACED = "placed"
    UPLOADING = "uploading"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Done, failed or cancelled: nothing more happens to the task."""
        return self in FINAL_STATES


FINAL_STATES = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})

# The moves a task may make. Anything else is a bug, caught at once.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.PLACED, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.PLACED: frozenset(
        {TaskState.UPLOADING, TaskState.QUEUED, TaskState.CANCELLED, TaskState.FAILED}
    ),
    TaskState.UPLOADING: frozenset(
        {TaskState.RUNNING, TaskState.QUEUED, TaskState.CANCELLED, TaskState.FAILED}
    ),
    TaskState.RUNNING: frozenset(
        {TaskState.DOWNLOADING, TaskState.QUEUED, TaskState.CANCELLED, TaskState.FAILED}
    ),
    TaskState.DOWNLOADING: frozenset(
        {TaskState.DONE, TaskState.QUEUED, TaskState.CANCELLED, TaskState.FAILED}
    ),
    TaskState.DONE: frozenset(),
    TaskState.FAILED: frozenset({TaskState.QUEUED}),  # `job retry`
    TaskState.CANCELLED: frozenset({TaskState.QUEUED}),  # `job retry`
}


class JobState(str, Enum):
    """A job's state, derived from its tasks."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # every task ended, some failed
    CANCELLED = "cancelled"


def new_id(prefix: str) -> str:
    """A short, sortable, unique id: time then randomness (safe in paths and shells)."""
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


@dataclass
class Attempt:
    """One try of a task on one node."""

    node: str
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    run: str | None = None  # its directory on the node, tasks/<run>
    inputs: list[str] | None = None  # names of the inputs uploaded, in the runner's order
    nice: int | None = None  # the niceness its runner was started at (None: before it was set)
    gate: int = 0  # core tokens its runner waited on before computing (0: none, it ran at once)


@dataclass
class Task:
    """A share of a job's inputs, run on one node at a time."""

    id: str
    job_id: str
    inputs: list[dict[str, Any]]  # {"name", "path" or "remote", "size", "sha256"}
    state: TaskState = TaskState.QUEUED
    node: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    pid: int | None = None
    remote_dir: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)  # {"name", "size", "sha256"}
    exit_status: int | None = None
    started: float | None = None
    finished: float | None = None
    duplicate_of: str | None = None  # a speculative copy of that task: first result wins
    moved_to: str | None = None  # its inputs were all placed again within other tasks

    def run_name(self) -> str:
        """The directory of its latest attempt on the node (the task id in older ledgers)."""
        last = self.attempts[-1] if self.attempts else None
        return last.run if last is not None and last.run else self.id

    def new_attempt(self, node: str, now: float) -> Attempt:
        """A new try on `node`, with a directory name of its own there (numbered, and unique
        even after `job retry` starts the count again)."""
        run = f"{self.id}.{len(self.attempts) + 1}-{secrets.token_hex(2)}"
        names = [item["name"] for item in self.inputs]
        attempt = Attempt(node=node, started=now, run=run, inputs=names)
        self.attempts.append(attempt)
        return attempt

    def to_dict(self) -> dict[str, Any]:
        """The stored and `--json` shape."""
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Rebuild from the stored shape."""
        values = dict(data)
        values["state"] = TaskState(values["state"])
        values["attempts"] = [Attempt(**a) for a in values.get("attempts", [])]
        return cls(**values)


@dataclass
class Job:
    """A unit of work of one kind, split into tasks."""

    id: str
    kind: str
    created: float
    params: dict[str, Any] = field(default_factory=dict)
    selector: str = "all"
    priority: int = 0
    after: list[str] = field(default_factory=list)
    cancelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The stored shape (tasks are stored apart)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Rebuild from the stored shape."""
        return cls(**data)


def job_state(job: Job, tasks: list[Task]) -> JobState:
    """The state of a job, from its tasks."""
    if not tasks:
        return JobState.CANCELLED if job.cancelled else JobState.DONE
    states = {effective_state(t, tasks) for t in tasks if t.duplicate_of is None and not t.moved_to}
    if states <= FINAL_STATES:
        if TaskState.FAILED in states:
            return JobState.FAILED
        if TaskState.CANCELLED in states:
            return JobState.CANCELLED
        return JobState.DONE
    if states == {TaskState.QUEUED}:
        return JobState.QUEUED
    return JobState.RUNNING


def effective_state(task: Task, tasks: list[Task]) -> TaskState:
    """A task's state counting its copies: done when any is done, live while any is live."""
    copies = [t for t in tasks if t.duplicate_of == task.id]
    if not copies or task.state == TaskState.DONE:
        return task.state
    if any(t.state == TaskState.DONE for t in copies):
        return TaskState.DONE
    if task.state.final:
        live = [t.state for t in copies if not t.state.final]
        return live[0] if live else task.state
    return task.state
