"""Taking back inputs a running task has not started, to place them elsewhere.

A task of several inputs runs them one after another; its runner claims each input on the
node just before starting it. The executor may claim the unstarted ones first (one exec,
`remote.TAKEBACK`): those it wins come back to the queue in a new task and the runner skips
them. The runner lists what it skipped with its status, so a take-back whose answer was
lost (a crash, a cut connection) is still found when the task finishes.
"""

from __future__ import annotations

import time

from edgectl.jobs import remote
from edgectl.jobs.exec_copies import Copies
from edgectl.jobs.exec_setbacks import Setbacks
from edgectl.jobs.exec_state import ACTIVE, NodeSlot
from edgectl.jobs.model import Task, TaskState
from edgectl.jobs.placement import task_key
from edgectl.scheduler import Stall, TakeBack, TaskStatus
from edgectl.transport import TransportError


class TakingBack(Setbacks, Copies):
    """Inputs given back by running tasks, and the tasks that hold them afterwards."""

    def _take_backs(self) -> None:
        """Ask the scheduler which unstarted inputs of running tasks to take back, and do it."""
        for request in self.dispatcher.take_back(time.time()):
            self._spawn(self._reclaim(request))

    def _end_stalls(self) -> None:
        """End the tasks the scheduler finds stalled: their inputs go elsewhere."""
        now = time.time()
        for stall in self.dispatcher.stalled(now):
            self._end_stall(stall)
        # A task that computed every input but never ends (stuck listing its outputs) has
        # no chunk left in the scheduler: it is ended here, after the same least time.
        for slot in self.nodes.values():
            for task_id in sorted(slot.active):
                task = self.tasks[task_id]
                mark = self.progress.get(task_id)
                keys = self._inputs_of(task)
                if task.state != TaskState.RUNNING or mark is None or mark.done < len(keys):
                    continue
                if keys and now - mark.since > self.dispatcher.config.stall_min_s:
                    # Its last input counts as failed there (twice: failed for good).
                    stall = Stall(slot.node.name, keys[-1], tuple(keys), now - mark.since)
                    self._end_stall(stall)

    def _end_stall(self, stall: Stall) -> None:
        slot = self.nodes[stall.node]
        holders = {self.attempt.get((key, stall.node)) for key in stall.held} - {None}
        task = self.tasks.get(holders.pop() or "") if len(holders) == 1 else None
        now = time.time()
        reason = f"no progress for {stall.elapsed_s:.0f} s: ended"
        others = set(self.dispatcher.running_on(stall.task_id)) - {stall.node}
        if task is not None and not task.state.final and (task.duplicate_of or others):
            # One attempt of a race (it holds that input alone): it failed there, the
            # other attempt goes on.
            self._stop(slot, task)
            self._fail(task, slot, reason)
            return
        for_good = False
        for key in stall.held:
            self.attempt.pop((key, stall.node), None)
            if key == stall.task_id:
                status = self.dispatcher.task_failed(key, stall.node, reason, now)
                for_good = status is TaskStatus.FAILED
            else:
                self.dispatcher.task_returned(key, stall.node, now)
        if task is None or task.state.final:
            return
        self._stop(slot, task)
        if task.attempts:
            task.attempts[-1].error = reason
            task.attempts[-1].finished = now
        # Queued for now; an input that failed for good (its second node) is recorded
        # failed, with every node's reason, when the run settles what ended.
        self._set(task, state=TaskState.QUEUED, node=None, pid=None, error=reason)
        then = "placing it elsewhere"
        if for_good:
            rest = ", the rest go elsewhere" if len(stall.held) > 1 else ""
            then = f"it failed on two nodes{rest}"
        self.event(task.job_id, f"task {task.id} on {stall.node}: {reason}; {then}")
        self.wakeup.set()

    async def _reclaim(self, request: TakeBack) -> None:
        slot = self.nodes[request.node]
        holders = {self.attempt.get((key, request.node)) for key in request.task_ids}
        task = self.tasks.get(holders.pop() or "") if len(holders) == 1 else None
        won: list[str] = []
        if task is not None and task.state == TaskState.RUNNING and not slot.lost:
            won = await self._take_back(task, slot, list(request.task_ids))
        self.dispatcher.taken_back(request, won, time.time())
        self.wakeup.set()

    async def _take_back(self, task: Task, slot: NodeSlot, keys: list[str]) -> list[str]:
        """Claim these inputs of the running task on its node; return the keys won."""
        attempt = task.attempts[-1] if task.attempts else None
        if attempt is None or attempt.run is None or attempt.inputs is None:
            return []  # a ledger from before inputs were claimed one by one
        if task.duplicate_of is not None:
            return []  # a copy holds no input: its original does
        positions = {task_key(task.job_id, n): j for j, n in enumerate(attempt.inputs)}
        indices = sorted(positions[k] for k in keys if k in positions)
        if not indices:
            return []
        try:
            conn = await self.pool.connection(slot.node)
            result = await conn.run(
                remote.sh(remote.TAKEBACK, slot.node.workdir, attempt.run, *map(str, indices)),
                timeout=self.options.op_timeout,
                max_output=1 << 16,
            )
        except TransportError:
            return []  # nothing known to be won: a skipped input shows up with the status
        won = {int(line) for line in result.stdout_text.split() if line.isdigit()}
        if task.state != TaskState.RUNNING or task.attempts[-1] is not attempt:
            won = set()  # ended meanwhile: its report says what it skipped
        names = [attempt.inputs[j] for j in sorted(won) if j < len(attempt.inputs)]
        # The scheduler hears of them from the caller (`Dispatcher.taken_back`).
        self._give_back(task, slot, names, "taken back before it started", tell=False)
        return [task_key(task.job_id, n) for n in names]

    def _skipped(self, task: Task, slot: NodeSlot, report: remote.PollReport) -> None:
        """Inputs the finished task skipped (taken back) that it still holds: give them back."""
        attempt = task.attempts[-1] if task.attempts else None
        if not report.skipped or attempt is None or attempt.inputs is None:
            return
        names = [attempt.inputs[j] for j in sorted(report.skipped) if j < len(attempt.inputs)]
        self._give_back(task, slot, names, "skipped: taken back before it started")

    def _give_back(
        self, task: Task, slot: NodeSlot, names: list[str], why: str, tell: bool = True
    ) -> None:
        """These inputs leave the task for a queued one of their own, and the queue."""
        held = {item["name"] for item in task.inputs}
        items = [item for item in task.inputs if item["name"] in names and item["name"] in held]
        if not items:
            return
        now = time.time()
        back = self._new_task(task.job_id, items)
        for item in items:
            key = task_key(task.job_id, item["name"])
            self.holder[key] = back.id
            self.attempt.pop((key, slot.node.name), None)
            if tell:
                self.dispatcher.task_returned(key, slot.node.name, now)
        if len(items) == len(task.inputs) and task.state in ACTIVE:
            self._stop(slot, task)  # it holds nothing now: its attempt ends here
        ended = f"its inputs were taken back and placed again in task {back.id}"
        self._release(task, {i["name"] for i in items}, back.id, ended, finished=now)
        self.event(
            task.job_id,
            f"task {task.id} on {slot.node.name}: {len(items)} input(s) {why}, now in {back.id}",
        )
        self.wakeup.set()
