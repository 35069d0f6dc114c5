"""jobs.json: jobs, tasks and events, with task changes checked against the state machine.

The executor batches its changes (a poll round finishing twenty tasks is one write), and
every batch is applied to a fresh read under the lock: a `job cancel` from another process
is never overwritten, because a change that the state machine does not allow from the
stored state is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from edgectl.errors import NotFoundError
from edgectl.jobs.model import TRANSITIONS, Job, Task, TaskState
from edgectl.store import Store

FILE = "jobs"
EVENTS_PER_JOB = 500


class Ledger:
    """Read and change the jobs of one EDGECTL_HOME."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, job: Job, tasks: Iterable[Task]) -> None:
        """Store a new job with its tasks, in one write."""
        with self.store.transaction(FILE) as db:
            db.table("jobs").insert(job.to_dict())
            db.table("tasks").insert_multiple(t.to_dict() for t in tasks)
            db.table("events").insert(
                {"job": job.id, "time": job.created, "text": f"submitted ({job.kind})"}
            )

    def jobs(self) -> list[tuple[Job, list[Task]]]:
        """Every job with its tasks, oldest first."""
        with self.store.snapshot(FILE) as db:
            tasks: dict[str, list[Task]] = {}
            for doc in db.table("tasks").all():
                tasks.setdefault(doc["job_id"], []).append(Task.from_dict(dict(doc)))
            jobs = [Job.from_dict(dict(doc)) for doc in db.table("jobs").all()]
        jobs.sort(key=lambda j: (j.created, j.id))
        return [(job, tasks.get(job.id, [])) for job in jobs]

    def load(self, job_id: str) -> tuple[Job, list[Task]]:
        """One job and its tasks; an unambiguous prefix of the id is enough, `last` the newest."""
        every = self.jobs()
        if job_id == "last":
            if not every:
                raise NotFoundError("no jobs yet (see: edgectl job submit --help)")
            return every[-1]
        found = [(j, t) for j, t in every if j.id == job_id or j.id.startswith(job_id)]
        exact = [(j, t) for j, t in found if j.id == job_id]
        if exact:
            return exact[0]
        if len(found) == 1:
            return found[0]
        if not found:
            raise NotFoundError(f"no job {job_id!r} (see: edgectl job list)")
        raise NotFoundError(
            f"job id {job_id!r} is ambiguous: {', '.join(j.id for j, _ in found[:5])}"
        )

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The events of one job, oldest first."""
        with self.store.snapshot(FILE) as db:
            return [dict(e) for e in db.table("events").all() if e["job"] == job_id]

    def apply(
        self,
        changes: Mapping[str, Mapping[str, Any]],
        new_tasks: Iterable[Task] = (),
        events: Iterable[tuple[str, str]] = (),
        job_changes: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, Task]:
        """Apply task changes (by id), add tasks and events, in one write; return the stored tasks.

        A change whose `state` the state machine does not allow from the stored state is
        dropped whole (the stored task is returned unchanged), so a stale writer cannot
        undo a cancel or finish a task twice.
        """
        now = time.time()
        with self.store.transaction(FILE) as db:
            table = db.table("tasks")
            docs = {doc["id"]: doc for doc in table.all() if doc["id"] in changes}
            updated: dict[str, dict[str, Any]] = {}
            for task_id, change in changes.items():
                doc = docs.get(task_id)
                if doc is None:
                    continue
                target = change.get("state")
                if target is not None and not allowed(TaskState(doc["state"]), TaskState(target)):
                    continue
                record = {**dict(doc), **{k: _plain(v) for k, v in change.items()}}
                updated[task_id] = record
            if updated:

                def replace(doc: dict[str, Any]) -> None:
                    doc.update(updated[doc["id"]])

                table.update(replace, doc_ids=[docs[t].doc_id for t in updated])
            fresh = [t.to_dict() for t in new_tasks]
            if fresh:
                table.insert_multiple(fresh)
            if job_changes:
                jobs_table = db.table("jobs")
                for doc in jobs_table.all():
                    if doc["id"] in job_changes:
                        jobs_table.update(dict(job_changes[doc["id"]]), doc_ids=[doc.doc_id])
            event_list = [{"job": j, "time": now, "text": text} for j, text in events]
            if event_list:
                self._add_events(db, event_list)
            stored = {d["id"]: Task.from_dict(dict(d)) for d in table.all() if d["id"] in changes}
        return stored

    @staticmethod
    def _add_events(db: Any, events: list[dict[str, Any]]) -> None:
        table = db.table("events")
        table.insert_multiple(events)
        # Bounded: a long job keeps its latest events only.
        for job_id in {e["job"] for e in events}:
            ids = [doc.doc_id for doc in table.all() if doc["job"] == job_id]
            if len(ids) > EVENTS_PER_JOB:
                table.remove(doc_ids=ids[: len(ids) - EVENTS_PER_JOB])

    def set_job(self, job_id: str, **fields: Any) -> None:
        """Change fields of a job record (e.g. cancelled)."""
        self.apply({}, job_changes={job_id: fields})


def allowed(current: TaskState, target: TaskState) -> bool:
    """Whether a stored task may move to `target`: forward through live states, or a retry.

    A batch may carry several steps at once (placed -> running), so any state reachable
    through live states is allowed; an ended task moves only by an explicit retry.
    """
    if target == current:
        return True
    if current.final:
        return target in TRANSITIONS[current]
    seen, frontier = {current}, [current]
    while frontier:
        state = frontier.pop()
        for nxt in TRANSITIONS[state]:
            if nxt == target:
                return True
            if nxt not in seen and not nxt.final:
                seen.add(nxt)
                frontier.append(nxt)
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, TaskState):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return value
