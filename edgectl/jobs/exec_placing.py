"""Setting up a run and placing the scheduler's assignments.

The scheduler is told the nodes, the jobs and what the ledger shows in flight (tasks in
flight after a crash are adopted, not restarted); each assignment becomes a task on its node,
reusing the queued task that holds the same inputs.
"""

from __future__ import annotations

import time
from typing import Any

from edgectl.jobs import remote
from edgectl.jobs.exec_copies import kill_task
from edgectl.jobs.exec_state import ACTIVE, NodeSlot, Progress, RunJob
from edgectl.jobs.exec_task import TaskLife
from edgectl.jobs.model import Task, TaskState
from edgectl.jobs.placement import job_spec, local_inputs, node_state, task_key, task_specs
from edgectl.scheduler import Assignment


class Placing(TaskLife):
    """Tells the scheduler what is known and turns its assignments into started tasks."""

    def _setup(self) -> None:
        """Tell the scheduler the nodes, the jobs and what the ledger shows in flight."""
        now = time.time()
        local = local_inputs(r.job for r in self.jobs.values())
        self._update_nodes(
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
                dirs = {(a.node, a.run or task.id) for a in task.attempts}
                for node, name in sorted(dirs | {(task.node or "", task.run_name())}):
                    if node in self.nodes and name not in self.nodes[node].cleanup:
                        self.nodes[node].cleanup.append(name)

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
                run = task.run_name()
                self._spawn(kill_task(self.pool, slot.node, run, self.options.op_timeout))
                slot.cleanup.append(run)
            self._set(task, state=TaskState.CANCELLED, error="another attempt finished first")
            return
        if slot is None:
            self._set(task, state=TaskState.QUEUED, node=None, error="its node is not usable now")
            return
        live = [k for k in keys if k not in done]
        copy_of = None if task.duplicate_of is None else "an earlier run"
        last = task.attempts[-1] if task.attempts else None
        favoured = last is not None and last.nice == remote.NICE_FAVOURED
        self.dispatcher.adopt(slot.node.name, live, now, copy_of, favoured)
        for key in live:
            self.attempt[(key, slot.node.name)] = task.id
        slot.active.add(task.id)
        # In memory only: the poll tells whether it really started or finished; a finished
        # one is downloaded again (storing is idempotent), a lost one placed again.
        task.state = TaskState.RUNNING
        self.adopted.add(task.id)
        self.began.add(task.run_name())  # the scheduler takes it as computing from now
        self.progress[task.id] = Progress(0, now)
        slot.next_poll = 0.0
        self.event(task.job_id, f"task {task.id} on {slot.node.name}: reattached after a restart")

    # -- placement --------------------------------------------------------------------------

    def _place(self) -> None:
        placed = self.dispatcher.assign(time.time())
        for assignment in placed:
            self._start_assignment(assignment)
        if placed or self.new_tasks:
            # Write-ahead: the uploads start at the next await, after the ledger knows these
            # tasks and their attempts (node and directory there); a crash before that left
            # work running on nodes that nobody collects.
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
        attempt = task.new_attempt(slot.node.name, time.time())
        attempt.nice = remote.NICE_FAVOURED if assignment.favoured else remote.NICE
        attempt.gate = self._gate_for(slot.node.name, task, assignment.favoured)
        self._set(task, state=TaskState.PLACED, node=slot.node.name, error=None)
        slot.active.add(task.id)
        self._spawn(self._start(task, slot))

    def _reuse_or_create(
        self, job_id: str, keys: list[str], items: list[dict[str, Any]], slot: NodeSlot
    ) -> Task:
        """The queued task holding exactly these inputs, or a new one taking them over."""
        holders = {self.holder[k] for k in keys if k in self.holder}
        if len(holders) == 1:
            old = self.tasks[holders.pop()]
            same = sorted(self._inputs_of(old)) == sorted(keys)
            if old.state == TaskState.QUEUED and same:
                return old  # a new attempt: a directory of its own on the node
        task = self._new_task(job_id, items)
        moved = set(keys)
        for key in keys:
            previous = self.holder.get(key)
            self.holder[key] = task.id
            if previous is None or previous == task.id:
                continue
            old = self.tasks[previous]
            gone = {i["name"] for i in old.inputs if task_key(old.job_id, i["name"]) in moved}
            if gone:
                why = f"its inputs were placed again in task {task.id}"
                self._release(old, gone, task.id, why)
        return task
