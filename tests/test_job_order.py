"""Job priorities and `--after` on the real-sshd fleet: which work starts first, and waiting."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.jobs.executor import ExecOptions
from edgectl.jobs.service import Jobs
from tests.cli import run_cli
from tests.fleet import Fleet
from tests.test_fleet_view import make_home

pytestmark = pytest.mark.fleet

FAST = ExecOptions(op_timeout=5.0, lease=4.0, poll_max=0.3)
SLOW_UPPER = "sleep 0.2; tr a-z A-Z < {input} > out/{stem}.up"


def inputs(directory: Path, count: int) -> str:
    directory.mkdir(parents=True)
    for i in range(count):
        (directory / f"{directory.name}{i:02d}.txt").write_text(f"line {i}\n")
    return str(directory)


def starts(document: dict) -> list[float]:
    """When each primary task of a job first started."""
    return [
        t["attempts"][0]["started"]
        for t in document["tasks"]
        if not t["duplicate_of"] and t["attempts"]
    ]


def ends(document: dict) -> list[float]:
    return [a["finished"] for t in document["tasks"] for a in t["attempts"] if a["finished"]]


def test_higher_priority_work_is_placed_first_across_jobs_run_together(
    fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, fleet)
    jobs = Jobs(EdgeFleet(home))
    params = {"run": SLOW_UPPER}
    node = fleet.nodes[0].name  # one node: its few slots make the order visible
    low = jobs.submit("script", [inputs(tmp_path / "low", 10)], node, 0, params=params)
    high = jobs.submit("script", [inputs(tmp_path / "high", 10)], node, 5, params=params)
    states = jobs.run_many([low.id, high.id], options=FAST)  # the low one submitted first
    assert {s.value for s in states.values()} == {"done"}
    low_starts, high_starts = starts(jobs.show(low.id)), starts(jobs.show(high.id))
    assert min(high_starts) < min(low_starts)
    assert statistics.median(high_starts) < statistics.median(low_starts)


def test_a_job_after_another_run_together_starts_when_that_one_is_done(
    fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, fleet)
    jobs = Jobs(EdgeFleet(home))
    params = {"run": SLOW_UPPER}
    first = jobs.submit("script", [inputs(tmp_path / "first", 6)], "n*", 0, params=params)
    second = jobs.submit(
        "script", [inputs(tmp_path / "second", 6)], "n*", 9, after=[first.id], params=params
    )
    states = jobs.run_many([second.id, first.id], options=FAST)
    assert {s.value for s in states.values()} == {"done"}
    assert min(starts(jobs.show(second.id))) >= max(ends(jobs.show(first.id)))


def test_a_job_submitted_after_a_running_one_waits_for_it(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    first = run_cli(
        home,
        "job",
        "submit",
        "script",
        inputs(tmp_path / "a", 6),
        "--on",
        "n*",
        "--run",
        SLOW_UPPER,
    )
    assert first.exit_status == 0, first.stderr
    first_id = first.stdout.strip()  # runs in the background
    second = run_cli(
        home,
        "job",
        "submit",
        "script",
        inputs(tmp_path / "b", 4),
        "--on",
        "n*",
        "--after",
        first_id,
        "--run",
        SLOW_UPPER,
        "--wait",
        "--json",
    )
    assert second.exit_status == 0, second.stderr
    assert second.json["state"] == "done"
    shown = run_cli(home, "job", "show", first_id, "--json").json
    assert shown["state"] == "done"
    assert min(starts(second.json)) >= max(ends(shown))


def test_a_job_after_a_failed_one_fails_clearly_without_running(
    fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, fleet)
    failing = run_cli(
        home,
        "job",
        "submit",
        "script",
        inputs(tmp_path / "a", 1),
        "--on",
        "n*",
        "--run",
        "exit 3",
        "--wait",
        "--json",
    )
    assert failing.json["state"] == "failed"
    after = run_cli(
        home,
        "job",
        "submit",
        "script",
        inputs(tmp_path / "b", 3),
        "--on",
        "n*",
        "--after",
        failing.json["id"],
        "--run",
        SLOW_UPPER,
        "--wait",
        "--json",
    )
    assert after.exit_status == 7  # none done
    assert after.json["state"] == "failed"
    [task] = after.json["tasks"]
    assert task["node"] is None and task["attempts"] == []  # never placed
    assert task["error"] == f"it runs after job {failing.json['id']}, which ended failed"
    assert len(task["inputs"]) == 3


def test_a_job_after_a_cancelled_one_fails_clearly(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    jobs = Jobs(EdgeFleet(home))
    first = jobs.submit("script", [inputs(tmp_path / "a", 2)], "n*", params={"run": "true"})
    jobs.cancel(first.id)
    second = jobs.submit(
        "script", [inputs(tmp_path / "b", 2)], "n*", after=[first.id], params={"run": "true"}
    )
    assert jobs.run(second.id, options=FAST).value == "failed"
    [task] = jobs.show(second.id)["tasks"]
    assert "which ended cancelled" in task["error"]
