"""Jobs as the API offers them: submit, run (or resume), wait, cancel, retry, list, results."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.errors import NotFoundError, UsageError
from edgectl.facts.store import ProbeResult
from edgectl.inventory.model import Node
from edgectl.jobs.executor import ExecOptions, Executor, JobBusy, job_is_busy, job_lock, kill_task
from edgectl.jobs.explaining import explain_placement
from edgectl.jobs.inputs import expand_inputs, list_remote
from edgectl.jobs.kinds import get_kind, input_names
from edgectl.jobs.ledger import Ledger
from edgectl.jobs.model import Job, JobState, Task, TaskState, job_state, new_id
from edgectl.jobs.results import results_dir
from edgectl.scheduler import Explanation

if TYPE_CHECKING:
    from edgectl.api import Fleet

STARTUP_GRACE_S = 10.0  # a job submitted this recently may not have its runner started yet


def job_document(job: Job, tasks: list[Task]) -> dict[str, Any]:
    """The `--json` shape of a job: id, kind, state, created, tasks (id, node, state, inputs, attempts, error)."""
    pending = len(job.params.get("inputs", [])) - sum(
        len(t.inputs) for t in tasks if t.duplicate_of is None
    )
    return {
        "id": job.id,
        "kind": job.kind,
        "state": document_state(job, tasks, pending).value,
        "created": job.created,
        "selector": job.selector,
        "priority": job.priority,
        "after": job.after,
        "inputs": len(job.params.get("inputs", [])),
        "unassigned_inputs": max(0, pending),
        "tasks": [
            {
                "id": t.id,
                "node": t.node,
                "state": t.state.value,
                "inputs": [i["name"] for i in t.inputs],
                "attempts": [a.__dict__ for a in t.attempts],
                "error": t.error,
                "outputs": t.outputs,
                "duplicate_of": t.duplicate_of,
            }
            for t in tasks
        ],
    }


def document_state(job: Job, tasks: list[Task], pending: int) -> JobState:
    """A job's state, counting inputs not yet given to any task as work still to do."""
    state = job_state(job, tasks)
    if job.cancelled and state != JobState.DONE:
        return JobState.CANCELLED
    if pending > 0 and state in (JobState.DONE, JobState.FAILED):
        return JobState.RUNNING if tasks else JobState.QUEUED
    return state


class Jobs:
    """The jobs of one fleet."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.ledger = Ledger(fleet.store)

    def submit(
        self,
        kind: str,
        inputs: Sequence[str],
        selector: str = "all",
        priority: int = 0,
        after: Sequence[str] = (),
        params: dict[str, Any] | None = None,
        remote_paths: Sequence[str] = (),
    ) -> Job:
        """Check and store a new job (it runs on `run` or in the background).

        `remote_paths` are globs of files already on the selected nodes: they are listed
        now (one exec per node) and each is processed where it lies, never uploaded.
        """
        job = self._prepare(kind, inputs, selector, priority, after, params, remote_paths)
        self.fleet.store.ensure_home()
        self.ledger.create(job, [])
        return job

    def _prepare(
        self,
        kind: str,
        inputs: Sequence[str],
        selector: str,
        priority: int,
        after: Sequence[str],
        params: dict[str, Any] | None,
        remote_paths: Sequence[str],
    ) -> Job:
        """A new job, checked, not stored."""
        handler = get_kind(kind)
        params = dict(params or {})
        handler.check(params)
        paths = expand_inputs(inputs) if inputs else []
        nodes = self.fleet.nodes(selector)  # a selector that matches nothing is refused now
        remote = list_remote(self.fleet, nodes, remote_paths) if remote_paths else []
        if not paths and not remote:
            raise UsageError("no inputs given (files, directories, globs or --remote-path)")
        names = input_names([str(p) for p in paths])
        local = [
            {"name": name, "path": str(p), "size": p.stat().st_size}
            for name, p in zip(names, paths, strict=True)
        ]
        params["inputs"] = local + remote
        return Job(
            id=new_id("j"),
            kind=kind,
            created=time.time(),
            params=params,
            selector=selector,
            priority=priority,
            after=[self.ledger.load(a)[0].id for a in after],
        )

    def start_background(self, job_id: str) -> int:
        """Run the job in a detached edgectl process (it outlives this one); return its pid."""
        logs = self.fleet.home / "logs"
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(logs / f"{job_id}.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgectl",
                    "--home",
                    str(self.fleet.home),
                    "job",
                    "resume",
                    job_id,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        return proc.pid

    def run(
        self,
        job_id: str,
        options: ExecOptions | None = None,
        forks: int = 100,
        accept_new: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> JobState:
        """Run (or resume) a job in this process until it ends."""
        job, _ = self.ledger.load(job_id)
        return self.run_many([job.id], options, forks, accept_new, on_progress)[job.id]

    def run_many(
        self,
        job_ids: Sequence[str],
        options: ExecOptions | None = None,
        forks: int = 100,
        accept_new: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, JobState]:
        """Run (or resume) jobs together: their tasks are placed by priority across them."""
        import asyncio

        ids = [self.ledger.load(j)[0].id for j in job_ids]
        with contextlib.ExitStack() as locks:
            for job_id in ids:
                locks.enter_context(job_lock(self.fleet.home, job_id))
            states: dict[str, JobState] = {}
            runs = []
            for job_id in ids:
                job, tasks = self.ledger.load(job_id)  # fresh, under the lock
                if job.cancelled:
                    states[job.id] = job_state(job, tasks)
                elif (why := self._wait_for_dependencies(job, set(ids))) is not None:
                    states[job.id] = self._fail_unrun(job, tasks, why)
                else:
                    runs.append((job, tasks))
            if runs:
                states.update(
                    asyncio.run(
                        self._run(runs, options or ExecOptions(), forks, accept_new, on_progress)
                    )
                )
            return states

    def _wait_for_dependencies(self, job: Job, together: set[str]) -> str | None:
        """Wait for the jobs it comes after (those not run here); why it cannot run, or None."""
        for dependency in job.after:
            if dependency in together:
                continue  # placed after it by the scheduler, in this run
            state = self.wait(dependency)
            if state != JobState.DONE:
                return f"it runs after job {dependency}, which ended {state.value}"
        return None

    def _fail_unrun(self, job: Job, tasks: list[Task], why: str) -> JobState:
        """End a job that cannot run: its unassigned inputs and queued tasks fail with `why`."""
        assigned = {i["name"] for t in tasks for i in t.inputs}
        pending = [i for i in job.params.get("inputs", []) if i["name"] not in assigned]
        fresh = (
            [Task(id=new_id("t"), job_id=job.id, inputs=pending, state=TaskState.FAILED, error=why)]
            if pending
            else []
        )
        changes = {
            t.id: {"state": TaskState.FAILED.value, "error": why}
            for t in tasks
            if t.state == TaskState.QUEUED
        }
        self.ledger.apply(changes, fresh, [(job.id, f"not run: {why}")])
        _, tasks = self.ledger.load(job.id)
        return job_state(job, tasks)

    def _selected(self, jobs: Sequence[Job]) -> list[Node]:
        """Every node some of the jobs may use, once each."""
        found: dict[str, Node] = {}
        for job in jobs:
            for node in self.fleet.nodes(job.selector, allow_empty=True):
                found.setdefault(node.name, node)
        return list(found.values())

    async def _run(
        self,
        runs: list[tuple[Job, list[Task]]],
        options: ExecOptions,
        forks: int,
        accept_new: bool,
        on_progress: Callable[[int, int], None] | None,
    ) -> dict[str, JobState]:
        nodes = self._selected([job for job, _ in runs])
        async with self.fleet.pool(options.op_timeout, forks, accept_new) as pool:
            # keep_session=False: the job's tasks want every channel sshd allows per node.
            probed = await self.fleet.probe_async(
                nodes, pool, options.op_timeout, keep_session=False
            )
            up = {r.name for r in probed if r.reachable}

            async def reprobe(chosen: list[Node]) -> list[ProbeResult]:
                return await self.fleet.probe_async(
                    chosen, pool, options.op_timeout, keep_session=False
                )

            executor = Executor(
                self.fleet.home,
                self.ledger,
                runs,
                [n for n in nodes if n.name in up],
                probed,
                pool,
                options,
                on_progress,
                prober=reprobe,
            )
            for job, _ in runs:
                selected = {n.name for n in self.fleet.nodes(job.selector, allow_empty=True)}
                if not selected & up:
                    executor.event(job.id, "no selected node is reachable")
            states = await executor.run()
            for job, _ in runs:
                sent = executor.bytes_uploaded.get(job.id, 0)
                executor.event(job.id, f"{sent} bytes uploaded (inputs, runners, scripts)")
                try:
                    get_kind(job.kind).finish(job, results_dir(self.fleet.home, job.id))
                except (OSError, ValueError, UsageError) as exc:  # a partial that cannot merge
                    executor.event(job.id, f"finishing the results failed: {exc}")
            executor.flush()
            return states

    def explain(
        self,
        kind: str,
        inputs: Sequence[str],
        selector: str = "all",
        priority: int = 0,
        after: Sequence[str] = (),
        params: dict[str, Any] | None = None,
        remote_paths: Sequence[str] = (),
        timeout: float = 10.0,
        forks: int = 100,
        accept_new: bool = False,
    ) -> Explanation:
        """A dry run of `submit`: probe the nodes (recording nothing) and explain the placement."""
        import asyncio

        from edgectl.facts.probe import probe_nodes

        job = self._prepare(kind, inputs, selector, priority, after, params, remote_paths)
        handler = get_kind(kind)
        nodes = self.fleet.nodes(selector)

        async def probe() -> list[ProbeResult]:
            async with self.fleet.pool(timeout, forks, accept_new) as pool:
                return await probe_nodes(nodes, pool, timeout)

        probed = {r.name: r for r in asyncio.run(probe())}
        return explain_placement(job, handler, nodes, probed, self._done_dependencies(job))

    def _done_dependencies(self, job: Job) -> list[str]:
        return [a for a in job.after if self.show(a)["state"] == JobState.DONE.value]

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> JobState:
        """Wait until a job has ended (by whatever process runs it); return its state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job, tasks = self.ledger.load(job_id)
            state = job_state(job, tasks)
            pending = len(job.params.get("inputs", [])) > sum(
                len(t.inputs) for t in tasks if t.duplicate_of is None
            )
            if state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED) and not pending:
                return state
            starting = time.time() - job.created < STARTUP_GRACE_S  # its runner may be starting
            if not job_is_busy(self.fleet.home, job.id) and not job.cancelled and not starting:
                raise UsageError(
                    f"job {job.id} is not running (resume it with: edgectl job resume {job.id})"
                )
            if job.cancelled and not job_is_busy(self.fleet.home, job.id):
                return JobState.CANCELLED
            if deadline is not None and time.monotonic() > deadline:
                raise UsageError(f"job {job.id} still {state.value} after {timeout} s")
            time.sleep(poll)

    def cancel(self, job_id: str, timeout: float = 30.0) -> list[Task]:
        """Cancel a job: its executor (or this process) kills every remote process group."""
        import asyncio

        job, _ = self.ledger.load(job_id)
        self.ledger.set_job(job.id, cancelled=True)
        try:
            with job_lock(self.fleet.home, job.id):
                # Nobody is running it: kill what the ledger says is in flight ourselves.
                _, tasks = self.ledger.load(job.id)
                asyncio.run(self._kill(tasks, timeout))
                changes = {
                    t.id: {"state": TaskState.CANCELLED.value} for t in tasks if not t.state.final
                }
                self.ledger.apply(changes, events=[(job.id, "cancelled")])
        except JobBusy:
            deadline = time.monotonic() + timeout
            while job_is_busy(self.fleet.home, job.id) and time.monotonic() < deadline:
                time.sleep(0.2)
        return self.ledger.load(job.id)[1]

    async def _kill(self, tasks: list[Task], timeout: float) -> None:
        nodes = {n.name: n for n in self.fleet.inventory.nodes()}
        live = [
            t
            for t in tasks
            if t.state
            in (TaskState.UPLOADING, TaskState.RUNNING, TaskState.DOWNLOADING, TaskState.PLACED)
        ]
        async with self.fleet.pool(timeout) as pool:
            await asyncio_gather(
                [
                    kill_task(pool, nodes[t.node], t.run_name(), timeout)
                    for t in live
                    if t.node in nodes
                ]
            )

    def retry(self, job_id: str) -> int:
        """Put failed and cancelled tasks back in the queue; return how many."""
        job, tasks = self.ledger.load(job_id)
        again: dict[str, dict[str, Any]] = {
            t.id: {"state": TaskState.QUEUED.value, "error": None, "node": None, "attempts": []}
            for t in tasks
            if t.state in (TaskState.FAILED, TaskState.CANCELLED)
        }
        self.ledger.apply(
            again,
            events=[(job.id, f"retry of {len(again)} task(s)")],
            job_changes={job.id: {"cancelled": False}},
        )
        return len(again)

    def list_jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every job (oldest first), maybe only those in one state."""
        documents = [job_document(j, t) for j, t in self.ledger.jobs()]
        return [d for d in documents if state is None or d["state"] == state]

    def show(self, job_id: str) -> dict[str, Any]:
        """One job's document."""
        return job_document(*self.ledger.load(job_id))

    def results(self, job_id: str) -> tuple[Path, list[dict[str, Any]]]:
        """Where a job's results are and what they are (name, size, sha256, task, node)."""
        job, tasks = self.ledger.load(job_id)
        files = [
            {"task": t.id, "node": t.node, **o}
            for t in tasks
            if t.state == TaskState.DONE
            for o in t.outputs
        ]
        return results_dir(self.fleet.home, job.id), files

    def logs(self, job_id: str, task_id: str | None = None) -> list[dict[str, Any]]:
        """A job's events, or one task's remote stdout/stderr tail (from its node)."""
        job, tasks = self.ledger.load(job_id)
        if task_id is None:
            return self.ledger.events(job.id)
        task = next((t for t in tasks if t.id == task_id or t.id.startswith(task_id)), None)
        if task is None:
            raise NotFoundError(f"job {job.id} has no task {task_id!r}")
        return [{"task": task.id, "text": self._remote_logs(task)}]

    def _remote_logs(self, task: Task) -> str:
        import asyncio

        from edgectl.jobs import remote

        if task.node is None:
            return "(the task has not run)"
        node: Node = self.fleet.node(task.node)

        async def fetch() -> str:
            async with self.fleet.pool(30.0) as pool:
                conn = await pool.connection(node)
                result = await conn.run(
                    remote.sh(remote.LOGS, node.workdir, task.run_name()),
                    timeout=30.0,
                    max_output=1 << 17,
                )
                return result.stdout_text

        return asyncio.run(fetch())


async def asyncio_gather(coroutines: list[Any]) -> None:
    """Await all, ignoring their individual failures (best-effort cleanup)."""
    import asyncio

    await asyncio.gather(*coroutines, return_exceptions=True)
