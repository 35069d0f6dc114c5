"""One task's life on its node: upload and start detached, finish, fetch and store its outputs."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

from edgectl.jobs import remote
from edgectl.jobs.exec_copies import kill_task
from edgectl.jobs.exec_state import NodeSlot, Progress
from edgectl.jobs.exec_takeback import TakingBack
from edgectl.jobs.model import Attempt, Task, TaskState
from edgectl.jobs.results import ResultError, store_file, store_output, temp_path
from edgectl.scheduler import TaskStatus
from edgectl.transport import TransportError


def fetch_batches(manifest: list[remote.OutputEntry], limit: int) -> list[list[remote.OutputEntry]]:
    """Outputs grouped for download: runs of small ones up to `limit` bytes per exec, and
    each output over `limit` alone (it is streamed to disk)."""
    batches: list[list[remote.OutputEntry]] = []
    size = 0
    for entry in manifest:
        if entry.size > limit:
            batches.append([entry])
            size = limit + 1  # nothing joins a streamed one
        elif batches and size + entry.size <= limit:
            batches[-1].append(entry)
            size += entry.size
        else:
            batches.append([entry])
            size = entry.size
    return batches


def uploading(task: Task, attempt: Attempt) -> bool:
    """Whether the task is still uploading this attempt (not cancelled or placed again)."""
    return task.state == TaskState.UPLOADING and task.attempts[-1] is attempt


class TaskLife(TakingBack):
    """Starts a task on its node and brings its outputs home when it finishes."""

    async def _start(self, task: Task, slot: NodeSlot) -> None:
        run = self.jobs[task.job_id]
        # The attempt (its node and directory there) was written when it was placed.
        attempt = task.attempts[-1]
        if task.state != TaskState.PLACED or attempt.run is None:
            return  # cancelled, or beaten by a copy, before its upload began: nothing to undo
        name = attempt.run
        self._set(task, state=TaskState.UPLOADING, started=time.time())
        try:
            payload = run.kind.payload(run.job.params, task.inputs)
            data = remote.pack_task(payload.files, payload.run_sh, payload.runners)
            self.bytes_uploaded[task.job_id] = self.bytes_uploaded.get(task.job_id, 0) + len(data)
        except OSError as exc:
            self._fail(task, slot, f"cannot read an input: {exc.strerror}: {exc.filename}", True)
            return
        try:
            conn = await self.pool.connection(slot.node)
            sent = time.time()
            nice = remote.NICE if attempt.nice is None else attempt.nice
            steps = str(self.options.start_wait_steps)
            argv = remote.sh(
                remote.START,
                slot.node.workdir,
                name,
                steps,
                str(nice),
                str(attempt.gate),
                str(run.job.priority),
            )
            result = await conn.run(
                argv, stdin=data, timeout=self.options.op_timeout, max_output=16 << 20
            )
        except TransportError as exc:
            self._node_trouble(slot, exc)
            if not uploading(task, attempt):
                slot.abandoned.add(name)  # it may have started: killed or given up later
            else:
                self._requeue(task, slot, f"{exc.reason}: {exc}")
            return
        if not uploading(task, attempt):
            # Cancelled, or beaten by a copy, during its upload: end what this started.
            if result.exit_status == 0:
                self._spawn(kill_task(self.pool, slot.node, name, self.options.op_timeout))
                slot.cleanup.append(name)
            return
        slot.last_ok = self.clock()
        if result.exit_status != 0:
            why = result.stderr_text.strip().splitlines()[-1:] or [f"exit {result.exit_status}"]
            if result.exit_status not in remote.START_CLEANED:
                # Cut short here (output over its cap): the runner may be running.
                self._spawn(kill_task(self.pool, slot.node, name, self.options.op_timeout))
            self._fail(task, slot, f"upload or start failed: {why[0][:300]}")
            return
        self._set(
            task,
            state=TaskState.RUNNING,
            pid=remote.start_number(result.stdout_text, "pid"),
            remote_dir=f"{slot.node.workdir}/{remote.TASKS_DIR}/{name}",
        )
        report = remote.parse_poll(
            result.stdout_text, [name], self.options.max_file, self.options.max_task_output
        )
        # A task that ended during the start's wait began no earlier than its launch: the
        # reply less the steps waited (with none, the start's beginning, upload included:
        # too long rather than too short). Timed from the reply, it would seem to take no
        # time at all and give its node an absurd rate.
        now = time.time()
        finished = report[name].state == "finished"
        waited = remote.start_number(result.stdout_text, "waited")
        launched = now - waited * remote.START_STEP_S if waited else sent
        self.progress[task.id] = Progress(0, launched if finished else now)
        if attempt.gate == 0 or finished:
            # No gate: computing now. Gated: it computes once a core token is free, which
            # a later poll tells (`gated` on the node).
            self._began(task, slot, seen=not finished)
        if finished:
            await self._finished(task, slot, report[name])
        else:
            slot.next_poll = min(slot.next_poll or math.inf, self.clock() + self.options.poll_min)
            slot.poll_interval = self.options.poll_min

    def _began(self, task: Task, slot: NodeSlot, seen: bool = True) -> None:
        """The task's attempt began computing: tell the scheduler, once per attempt.

        `seen`: it was seen computing, so its time per input counts from now. Otherwise it
        began unseen (it ended between two polls, or during its start) and its time counts
        from its mark: when it was last known not to compute, or its launch.
        """
        name, keys = task.run_name(), self._inputs_of(task)
        if name in self.began or not keys:
            return
        self.began.add(name)
        now = time.time()
        if seen or task.id not in self.progress:
            self.progress[task.id] = Progress(0, now)
        self.dispatcher.task_started(keys[0], slot.node.name, now)

    def _computed(self, task: Task, slot: NodeSlot, count: int) -> None:
        """The node says `count` of the task's inputs are done: tell the scheduler (timing only)."""
        mark = self.progress.setdefault(task.id, Progress(0, time.time()))
        keys = self._inputs_of(task)
        count = min(count, len(keys))
        if count <= mark.done:
            return
        now = time.time()
        share = max(1e-3, now - mark.since) / (count - mark.done)
        for key in keys[mark.done : count]:
            self.dispatcher.task_computed(key, slot.node.name, share, now)
        mark.done, mark.since = count, now
        if count < len(keys):
            self.dispatcher.task_started(keys[count], slot.node.name, now)

    async def _finished(self, task: Task, slot: NodeSlot, report: remote.PollReport) -> None:
        if task.state != TaskState.RUNNING:
            return
        self._skipped(task, slot, report)
        if task.state != TaskState.RUNNING:
            return  # every input was taken back before it started: it ended there
        keys = self._inputs_of(task)
        if report.exit_status == 0 and not report.error:
            self._computed(task, slot, len(keys))  # timed before the download
        rival = next(
            (self.claimed[k] for k in keys if self.claimed.get(k, task.id) != task.id), None
        )
        if rival is not None or any(
            self.dispatcher.task_status(k) is TaskStatus.DONE for k in keys
        ):
            self._lost_race(task, slot, rival)
            return
        self._set(task, state=TaskState.DOWNLOADING, exit_status=report.exit_status)
        if report.error or report.exit_status != 0:
            reason = report.error or f"exit status {report.exit_status}"
            if not report.error:
                tail = await self._stderr_tail(task, slot)
                reason += f": {tail}" if tail else ""
            self._fail(task, slot, reason)
            slot.cleanup.append(task.run_name())
            return
        for key in keys:
            self.claimed[key] = task.id  # first result wins: a rival finishing now is a loser
        manifest = report.manifest or []
        results = self.jobs[task.job_id].results
        try:
            for batch in fetch_batches(manifest, self.options.fetch_batch):
                if len(batch) == 1 and batch[0].size > self.options.fetch_batch:
                    await self._stream_output(task, slot, batch[0], results)
                    continue
                why = await self._fetch_batch(task, slot, batch, results)
                if why:
                    self._unclaim(keys)
                    self._fail(task, slot, f"download failed: {why}")
                    slot.cleanup.append(task.run_name())
                    return
        except TransportError as exc:
            self._unclaim(keys)
            self._node_trouble(slot, exc)
            self._requeue(task, slot, f"download: {exc.reason}: {exc}")
            return
        except ResultError as exc:
            self._unclaim(keys)
            self._fail(task, slot, str(exc))
            slot.cleanup.append(task.run_name())
            return
        slot.last_ok = self.clock()
        finished = time.time()
        if task.attempts:  # a ledger written before attempts were saved with the state
            task.attempts[-1].finished = finished
        outputs = [{"name": e.name, "size": e.size, "sha256": e.sha256} for e in manifest]
        self._set(task, state=TaskState.DONE, outputs=outputs, finished=finished, error=None)
        slot.active.discard(task.id)
        slot.cleanup.append(task.run_name())
        for key in keys:
            self.attempt.pop((key, slot.node.name), None)
            for loser in self.dispatcher.task_finished(key, slot.node.name, 1e-3, finished):
                self._beaten(key, loser, slot.node.name)
            self._settle_holder(key, task)
        self._progress()

    async def _fetch_batch(
        self, task: Task, slot: NodeSlot, batch: list[remote.OutputEntry], results: Path
    ) -> str | None:
        """Outputs of a task in one exec, held in memory (a batch is small); why not, or None."""
        conn = await self.pool.connection(slot.node)
        argv = remote.sh(remote.FETCH, slot.node.workdir, task.run_name(), *(e.name for e in batch))
        total = sum(e.size for e in batch)
        result = await conn.run(
            argv,
            timeout=self.options.op_timeout + total / 5e6,
            # room for the reason on stderr even when the outputs are tiny
            max_output=max(total + 1, 4096),
        )
        if result.exit_status != 0 or result.truncated or len(result.stdout) != total:
            return result.stderr_text.strip()[:200] or f"got {len(result.stdout)} of {total} bytes"
        offset = 0
        for entry in batch:
            store_output(results, entry, result.stdout[offset : offset + entry.size], task.id)
            offset += entry.size
        return None

    async def _stream_output(
        self, task: Task, slot: NodeSlot, entry: remote.OutputEntry, results: Path
    ) -> None:
        """A big output, streamed to a temp file (memory stays bounded), then stored."""
        conn = await self.pool.connection(slot.node)
        results.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = temp_path(results, task.id)
        path = f"{slot.node.workdir}/{remote.TASKS_DIR}/{task.run_name()}/out/{entry.name}"
        try:
            await conn.get(
                path, temp, entry.size, timeout=self.options.op_timeout + entry.size / 5e6
            )
        except TransportError as exc:
            if exc.reason != "error" or conn.is_closed:
                raise  # the node or the link: the task is placed again
            raise ResultError(f"download failed: {exc}") from None  # the file itself
        store_file(results, entry, temp)

    def _unclaim(self, keys: list[str]) -> None:
        for key in keys:
            self.claimed.pop(key, None)

    async def _stderr_tail(self, task: Task, slot: NodeSlot) -> str:
        """The last line the task wrote on stderr, for its error message."""
        with contextlib.suppress(TransportError):
            conn = await self.pool.connection(slot.node)
            argv = remote.sh(remote.ERROR_TAIL, slot.node.workdir, task.run_name())
            result = await conn.run(argv, timeout=self.options.op_timeout, max_output=1 << 12)
            lines = [line for line in result.stdout_text.splitlines() if line.strip()]
            return lines[-1][:300] if lines else ""
        return ""
