"""Job and task data without servers: states with copies and moved inputs, scheduler mapping, polls."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from edgectl.jobs import remote
from edgectl.jobs.exec_task import fetch_batches
from edgectl.jobs.kinds import get_kind
from edgectl.jobs.model import Job, JobState, Task, TaskState, effective_state, job_state
from edgectl.jobs.placement import job_spec, local_inputs, task_key, task_specs
from edgectl.jobs.remote import OutputEntry, parse_poll


def job(**fields: object) -> Job:
    values: dict[str, object] = {"id": "j1", "kind": "script", "created": 0.0, **fields}
    return Job(**values)  # type: ignore[arg-type]


def task(task_id: str, state: TaskState, **fields: object) -> Task:
    values: dict[str, object] = {
        "inputs": [{"name": "a.txt", "path": "/x/a.txt", "size": 1}],
        **fields,
    }
    return Task(id=task_id, job_id="j1", state=state, **values)  # type: ignore[arg-type]


def test_a_task_beaten_by_its_copy_counts_as_done() -> None:
    original = task("t1", TaskState.CANCELLED, error="a copy on n2 finished first")
    copy = task("t2", TaskState.DONE, duplicate_of="t1")
    assert effective_state(original, [original, copy]) is TaskState.DONE
    assert job_state(job(), [original, copy]) is JobState.DONE


def test_a_failed_original_with_a_live_copy_is_still_running() -> None:
    original = task("t1", TaskState.FAILED)
    copy = task("t2", TaskState.RUNNING, duplicate_of="t1")
    assert job_state(job(), [original, copy]) is JobState.RUNNING
    copy.state = TaskState.FAILED
    assert job_state(job(), [original, copy]) is JobState.FAILED


def test_a_copy_that_lost_does_not_change_the_jobs_state() -> None:
    original = task("t1", TaskState.DONE)
    copy = task("t2", TaskState.CANCELLED, duplicate_of="t1")
    assert job_state(job(), [original, copy]) is JobState.DONE


def test_a_task_whose_inputs_moved_elsewhere_is_not_counted() -> None:
    moved = task("t1", TaskState.CANCELLED, moved_to="t2", inputs=[])
    taker = task("t2", TaskState.DONE)
    assert job_state(job(), [moved, taker]) is JobState.DONE


def test_scheduler_tasks_are_one_per_input_and_data_local_ones_are_pinned() -> None:
    items = [
        {"name": "a.txt", "path": "/x/a.txt", "size": 2_000_000},
        {"name": "n2__b.csv", "remote": "/data/b.csv", "node": "n2", "size": 10},
    ]
    the_job = job(params={"inputs": items, "run": "true"}, priority=3, after=["j0"])
    specs = task_specs(the_job, get_kind("script"), items)
    assert [s.id for s in specs] == [task_key("j1", "a.txt"), task_key("j1", "n2__b.csv")]
    assert specs[0].work == 3.0 and specs[0].only_on is None
    assert specs[1].only_on == "n2"
    assert local_inputs([the_job]) == {"n2": frozenset({"j1/n2__b.csv"})}
    spec = job_spec(the_job, get_kind("script"))
    assert (spec.priority, spec.after) == (3, ("j0",))


def test_the_kinds_eligibility_hook_is_the_jobs_capability_filter() -> None:
    ocr = job(kind="ocr", params={"lang": "deu"})
    spec = job_spec(ocr, get_kind("ocr"))
    assert spec.capability is not None
    assert spec.capability({"tesseract": "5.3", "tesseract_langs": ["eng", "deu"]}) is None
    why = spec.capability({"tesseract": "5.3", "tesseract_langs": ["eng"]})
    assert why == "cannot run ocr tasks: tesseract lacks language data: deu"


def test_a_poll_reports_how_many_inputs_a_running_task_has_done() -> None:
    reports = parse_poll("R\tt1\t3\nR\tt2\t\nR\tt3\tjunk\n", ["t1", "t2", "t3"], 10, 10)
    assert [reports[t].progress for t in ("t1", "t2", "t3")] == [3, 0, 0]
    assert reports["t1"].state == "running"


def test_a_cleanup_that_arrives_before_the_kill_still_ends_the_task(tmp_path: Path) -> None:
    """The node-side scripts in a real sh: a running task's group dies with its directory."""
    directory = tmp_path / "tasks" / "t1"
    running = subprocess.Popen(["setsid", "sleep", "60"])
    ended = subprocess.Popen(["setsid", "sleep", "60"])  # stands for a reused pid
    try:
        directory.mkdir(parents=True)
        (directory / ".claim").symlink_to("started")  # as its start leaves it
        (directory / "pid").write_text(f"{running.pid}\n")
        cleanup = remote.sh(remote.CLEANUP, str(tmp_path), "600", "t1")
        subprocess.run(cleanup, timeout=10, check=True)
        assert running.wait(timeout=5) == -signal.SIGKILL
        assert not directory.exists()
        # A finished task (its status written) is only removed: its pid is not signalled.
        directory.mkdir()
        (directory / ".claim").symlink_to("started")
        (directory / "status").write_text("0\n")
        (directory / "pid").write_text(f"{ended.pid}\n")
        subprocess.run(cleanup, timeout=10, check=True)
        assert not directory.exists()
        assert ended.poll() is None
    finally:
        for process in (running, ended):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_outputs_are_batched_up_to_the_limit_and_big_ones_go_alone() -> None:
    def entry(name: str, size: int) -> OutputEntry:
        return OutputEntry(name, size, "0" * 64)

    manifest = [entry("a", 10), entry("b", 50), entry("c", 200), entry("d", 40), entry("e", 70)]
    batches = fetch_batches(manifest, 100)
    assert [[e.name for e in batch] for batch in batches] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert fetch_batches([], 100) == []
    assert [len(b) for b in fetch_batches(manifest, 0)] == [1, 1, 1, 1, 1]
