"""The executor: runs the scheduler's placements, uploads and starts them detached, polls, pulls.

One process drives a job at a time (a lock file per job; `job resume` may drive several
together, their tasks placed by priority across them). The scheduler (`edgectl.scheduler`)
decides where each input runs and in which chunks; the executor turns each placement into
a task on its node and reports back what happened. All state changes go through the ledger
in batches; after a crash `job resume` rebuilds the picture from the ledger and asks the
nodes what became of each task, so nothing is lost or stored twice.

This module holds the run loop and how it ends (cancel, stuck work, final cleanup). The
`Executor` is built up from its parts, each a module, from the bottom:

- `exec_state`: options, what the run knows of nodes and jobs, batched bookkeeping;
- `exec_setbacks`: a task failing, a node letting it down, a node lost (its lease);
- `exec_copies`: tail copies racing, killing the losers and what was abandoned;
- `exec_task`: one task's life: upload and start, finish, fetch and store;
- `exec_polling`: polling nodes for their running tasks, re-probing facts;
- `exec_placing`: setting up from the ledger, placing the scheduler's assignments.

The one-executor-per-job lock is in `job_lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from edgectl.jobs.exec_copies import kill_task
from edgectl.jobs.exec_placing import Placing
from edgectl.jobs.exec_polling import Polling
from edgectl.jobs.exec_state import ExecOptions, RunJob
from edgectl.jobs.job_lock import JobBusy, job_is_busy, job_lock
from edgectl.jobs.model import JobState, TaskState, job_state
from edgectl.jobs.placement import task_key
from edgectl.jobs.results import write_manifest
from edgectl.scheduler import JobStatus, TaskStatus

__all__ = ["ExecOptions", "Executor", "JobBusy", "job_is_busy", "job_lock", "kill_task"]


class Executor(Placing, Polling):
    """Drives jobs to their end over a connection pool, placing through the scheduler."""

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
                task = self.tasks[task_id]
                if task.job_id != run.job.id:
                    continue
                slot.active.discard(task_id)
                if task.state not in (TaskState.PLACED, TaskState.UPLOADING):  # else: `_start`
                    run_name = task.run_name()
                    kills.append(kill_task(self.pool, slot.node, run_name, self.options.op_timeout))
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
                        # Every node that failed it (a copy's node too), as the scheduler
                        # counted them; else what its own attempts said.
                        if not self.dispatcher.task_failures(key):
                            tried = "; ".join(
                                f"{a.node}: {a.error}" for a in holder.attempts if a.error
                            )
                            why = tried or why
                        self._set(holder, state=TaskState.FAILED, error=why)
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
            self._take_backs()
            self._end_stalls()
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
            for run in sorted(slot.abandoned):
                task = self.tasks[run.split(".")[0]]
                self.event(task.job_id, f"task {run} abandoned on {slot.node.name}: killing it")

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
