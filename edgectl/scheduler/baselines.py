"""Naive policies to measure the dispatcher against: round-robin and static split.

Both know nothing of speed, load or data location: a node runs as many tasks at once as
it has cores. They honour priorities, `after` dependencies and required languages, and
hand a lost node's unfinished tasks to the others, so that they always finish.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from edgectl.scheduler.model import Assignment, JobSpec, NodeState, TakeBack, TaskSpec


class _Baseline:
    """Queues of chunks per node, filled when a job is released; slots are cores."""

    def __init__(self) -> None:
        self._cores: dict[str, int] = {}
        self._langs: dict[str, frozenset[str]] = {}
        self._alive: list[str] = []
        self._jobs: dict[str, JobSpec] = {}
        self._job_tasks: dict[str, list[str]] = {}
        self._task_job: dict[str, str] = {}
        self._released: set[str] = set()
        self._done: set[str] = set()
        self._done_jobs: set[str] = set()
        self._queues: dict[str, list[tuple[int, int, tuple[str, ...]]]] = {}
        self._running: dict[str, list[list[str]]] = {}
        self._seq = 0

    def update_nodes(self, nodes: Sequence[NodeState], now: float) -> None:
        """Learn the fleet from the first probe; later probes change nothing."""
        for state in nodes:
            if state.name not in self._cores and state.reachable:
                self._cores[state.name] = state.cores or 1
                self._langs[state.name] = state.langs
                self._alive.append(state.name)
                self._queues[state.name] = []
                self._running[state.name] = []

    def add_job(self, job: JobSpec, tasks: Sequence[TaskSpec], now: float) -> None:
        """Queue a job; its tasks are dealt out once the jobs it comes after are done."""
        self._jobs[job.id] = job
        self._job_tasks[job.id] = [t.id for t in tasks]
        for task in tasks:
            self._task_job[task.id] = job.id
        self._release()

    def assign(self, now: float) -> list[Assignment]:
        """Fill every free core with the next chunk queued for its node."""
        out = []
        for node in self._alive:
            queue, running = self._queues[node], self._running[node]
            while queue and len(running) < self._cores[node]:
                _, _, chunk = heapq.heappop(queue)
                running.append(list(chunk))
                out.append(Assignment(node, chunk))
        return out

    def take_back(self, now: float) -> list[TakeBack]:
        """Never: what is dealt to a node stays there."""
        return []

    def taken_back(self, request: TakeBack, returned: Iterable[str], now: float) -> list[str]:
        """Nothing is ever asked back."""
        return []

    def task_started(self, task_id: str, node: str, now: float) -> None:
        """Nothing to learn."""

    def task_finished(
        self, task_id: str, node: str, seconds: float, now: float, work: float | None = None
    ) -> list[str]:
        """Note the task done; release jobs that were waiting for its job."""
        for chunk in self._running.get(node, []):
            if task_id in chunk:
                chunk.remove(task_id)
                if not chunk:
                    self._running[node].remove(chunk)
                break
        self._done.add(task_id)
        job_id = self._task_job[task_id]
        if all(t in self._done for t in self._job_tasks[job_id]):
            self._done_jobs.add(job_id)
            self._release()
        return []

    def node_lost(self, node: str, now: float) -> list[str]:
        """Deal the node's unfinished tasks out again among the others."""
        if node not in self._alive:
            return []
        self._alive.remove(node)
        left = [t for chunk in self._running.pop(node) for t in chunk]
        left += [t for _, _, chunk in sorted(self._queues.pop(node)) for t in chunk]
        for job_id, job in self._jobs.items():
            mine = [t for t in left if self._task_job[t] == job_id]
            if mine:
                self._deal(job, mine)
        return left

    def _release(self) -> None:
        for job_id, job in self._jobs.items():
            if job_id not in self._released and all(a in self._done_jobs for a in job.after):
                self._released.add(job_id)
                self._deal(job, self._job_tasks[job_id])

    def _eligible(self, job: JobSpec) -> list[str]:
        return [n for n in self._alive if set(job.requires_langs) <= self._langs[n]]

    def _push(self, node: str, job: JobSpec, chunk: Sequence[str]) -> None:
        if chunk:
            self._seq += 1
            heapq.heappush(self._queues[node], (-job.priority, self._seq, tuple(chunk)))

    def _deal(self, job: JobSpec, task_ids: list[str]) -> None:
        raise NotImplementedError


class RoundRobin(_Baseline):
    """Each task to the next node in turn, one task per free core."""

    def __init__(self) -> None:
        super().__init__()
        self._turn = 0

    def _deal(self, job: JobSpec, task_ids: list[str]) -> None:
        nodes = self._eligible(job)
        for task_id in task_ids:
            self._push(nodes[self._turn % len(nodes)], job, [task_id])
            self._turn += 1


class StaticSplit(_Baseline):
    """The inputs divided evenly upfront: one contiguous share per node, one piece per core."""

    def _deal(self, job: JobSpec, task_ids: list[str]) -> None:
        nodes = self._eligible(job)
        for node, share in zip(nodes, _split(task_ids, len(nodes)), strict=True):
            for piece in _split(share, self._cores[node]):
                self._push(node, job, piece)


def _split(items: list[str], parts: int) -> list[list[str]]:
    """Contiguous pieces whose sizes differ by at most one."""
    size, extra = divmod(len(items), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(items[start:end])
        start = end
    return pieces
