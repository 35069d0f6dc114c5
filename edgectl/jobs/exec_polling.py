"""Polling nodes for their running tasks (with backoff), and refreshing their facts."""

from __future__ import annotations

import time

from edgectl.jobs import remote
from edgectl.jobs.exec_state import NodeSlot, Progress
from edgectl.jobs.exec_task import TaskLife
from edgectl.jobs.model import TaskState
from edgectl.jobs.placement import local_inputs, node_state
from edgectl.transport import TransportError


class Polling(TaskLife):
    """Asks each node what became of its running tasks, cleans up, re-probes the fleet."""

    async def _poll(self, slot: NodeSlot) -> None:
        by_run = {
            self.tasks[t].run_name(): self.tasks[t]
            for t in slot.active
            if self.tasks[t].state == TaskState.RUNNING
        }
        running = list(by_run)
        try:
            conn = await self.pool.connection(slot.node)
            if slot.cleanup:
                done, slot.cleanup = slot.cleanup, []
                age = str(self.options.given_up_age)
                await conn.run(
                    remote.sh(remote.CLEANUP, slot.node.workdir, age, *done),
                    timeout=self.options.op_timeout,
                )
            if not running:
                return
            asked = time.time()
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
            task = by_run[report.task_id]
            if report.state in ("lost", "given_up"):
                slot.cleanup.append(report.task_id)  # whatever it left (an upload cut short)
            if report.state != "starting":
                slot.starting.pop(report.task_id, None)
            if task.state != TaskState.RUNNING or task.run_name() != report.task_id:
                continue  # ended meanwhile (a copy won, a cancel)
            if report.state == "running":
                if report.computing or report.progress:
                    self._began(task, slot)
                elif task.run_name() not in self.began:
                    # Still waiting for a core token when asked: it computes from later on.
                    self.progress[task.id] = Progress(0, asked)
                self._computed(task, slot, report.progress)
            elif report.state == "starting":
                # Its start holds the attempt and writes the pid next; one that never does
                # (the node died in between) is lost after a lease.
                since = slot.starting.setdefault(report.task_id, self.clock())
                if self.clock() - since > self.options.lease:
                    self._fail(task, slot, "its start never finished")
            elif report.state == "finished":
                # It ended between two polls, maybe gated at the first: unseen.
                self._began(task, slot, seen=False)
                continue  # downloaded below
            elif task.id in self.adopted:
                # Given up (or its runner died): after the restart it can be placed again,
                # a start orphaned by the crash can no longer launch it.
                self._requeue(task, slot, "not started before the restart")
            else:
                self._fail(task, slot, report.error or "runner lost")
        slot.poll_interval = (
            self.options.poll_min
            if finished
            else min(self.options.poll_max, slot.poll_interval * 2)
        )
        slot.next_poll = self.clock() + slot.poll_interval
        for report in finished:
            self._spawn(self._finished(by_run[report.task_id], slot, report))

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
        self._update_nodes(
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
