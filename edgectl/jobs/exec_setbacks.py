"""When a task fails or its node lets it down: fail it, place it again, lose the node.

A node silent longer than its lease (or refusing connections) is lost: its tasks are
taken back and placed elsewhere, and killed on it once it answers again.
"""

from __future__ import annotations

import time
from typing import Any

from edgectl.jobs.exec_state import NodeSlot, RunState
from edgectl.jobs.model import Attempt, Task, TaskState
from edgectl.jobs.placement import task_key
from edgectl.scheduler import TaskStatus
from edgectl.transport import TransportError


class Setbacks(RunState):
    """Failures of tasks and of nodes, and what becomes of their inputs."""

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
        named = dict.fromkeys(f"{a.node}: {a.error}" for a in task.attempts if a.error)
        for item in failed:  # failed for good: every node that failed it, a race's rival too
            key = task_key(task.job_id, item["name"])
            for node, why in self.dispatcher.task_failures(key).items():
                named.setdefault(f"{node}: {why}" if node else why)
        reasons = "; ".join(named)
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
        slot.abandoned.add(task.run_name())
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
