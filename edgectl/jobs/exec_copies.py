"""Tail copies, kills and cleanup: the first result of an input wins, the others are killed.

Late tasks get a copy on another node (the scheduler decides); when one attempt finishes,
the rest are killed by process group and their directories cleaned up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from edgectl.inventory.model import Node
from edgectl.jobs import remote
from edgectl.jobs.exec_state import ACTIVE, NodeSlot, RunState
from edgectl.jobs.model import Task, TaskState
from edgectl.jobs.placement import task_key
from edgectl.transport import ConnectionPool, TransportError


class Copies(RunState):
    """Races between attempts of the same inputs, and killing what lost or was abandoned."""

    def _lost_race(self, task: Task, slot: NodeSlot, rival: str | None) -> None:
        """The task ended after another attempt of its inputs: its result is not stored."""
        slot.active.discard(task.id)
        slot.cleanup.append(task.run_name())
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
            self._stop(slot, loser)
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
        gone = {i["name"] for i in holder.inputs if task_key(holder.job_id, i["name"]) == key}
        if gone:
            self._release(holder, gone, winner.id, f"its input was done by task {winner.id}")

    def _stop(self, slot: NodeSlot, task: Task) -> None:
        """Kill a task's attempt on its node and remove its directory there."""
        slot.active.discard(task.id)
        if task.state in (TaskState.PLACED, TaskState.UPLOADING):
            return  # its start is on its way: `_start` ends what it started, once back
        run = task.run_name()
        self._spawn(kill_task(self.pool, slot.node, run, self.options.op_timeout))
        slot.cleanup.append(run)

    async def _reap(self, slot: NodeSlot) -> None:
        """Kill what was abandoned on a node that answers again, and clean it up."""
        gone, slot.abandoned = slot.abandoned, set()
        timeout = self.options.op_timeout
        await asyncio.gather(*(kill_task(self.pool, slot.node, t, timeout) for t in sorted(gone)))
        slot.cleanup.extend(sorted(gone))


async def kill_task(pool: ConnectionPool, node: Node, run: str, timeout: float) -> None:
    """Kill an attempt's process group on its node, or give it up if it has not started
    (best effort)."""
    with contextlib.suppress(TransportError):
        conn = await pool.connection(node)
        await conn.run(
            remote.sh(remote.KILL, node.workdir, remote.check_run_name(run)), timeout=timeout
        )
