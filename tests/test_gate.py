"""The node-side core gate: a task whose inputs are on its node waits there for one of N
core tokens before it computes, so that a node keeps more tasks than cores busy without
running more than N at once. On the real-sshd fleet, with real runners and real flocks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.jobs import remote
from edgectl.jobs.executor import ExecOptions
from edgectl.jobs.kinds import get_kind
from edgectl.jobs.model import Job, JobState, Task
from edgectl.jobs.placement import scheduler_config
from edgectl.jobs.service import Jobs
from edgectl.scheduler import Dispatcher
from tests.fleet import Fleet
from tests.test_fleet_view import make_home
from tests.test_jobs import _live_args, remove_given_up_markers

FAST = ExecOptions(op_timeout=5.0, lease=4.0, poll_max=0.5)
# No speculative copies: each input runs once, so that the times it leaves are its own.
ONCE = replace(
    FAST, scheduler=replace(scheduler_config(FAST.poll_max, FAST.reprobe_s), duplicates=False)
)
# What the probe is made to say of every node: four idle cores. The machine running the
# tests has few cores and a load of its own; pinned, the scheduler gives the node room for
# both tasks at once, whatever else runs here, and the free cores (the gate) are known.
CORES = 4
TIMED = "date +%s.%N > out/{stem}.start; sleep 1; date +%s.%N > out/{stem}.end"


@pytest.mark.parametrize(
    ("line", "progress", "computing"),
    [
        ("R\tta.1-00aa\t3", 3, True),  # a runner of before the gate: always computing
        ("R\tta.1-00aa\t0\t0", 0, False),  # waiting for a core token
        ("R\tta.1-00aa\t0\t1", 0, True),
        ("R\tta.1-00aa\t2\t1\n", 2, True),
        ("R\tta.1-00aa\tx\t0", 0, False),
    ],
)
def test_a_poll_tells_whether_a_running_task_waits_at_the_gate(
    line: str, progress: int, computing: bool
) -> None:
    [report] = remote.parse_poll(line, ["ta.1-00aa"], 1 << 20, 1 << 20).values()
    assert report.state == "running"
    assert report.progress == progress
    assert report.computing is computing


@pytest.fixture
def idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes that report CORES idle cores (the rest of each probe is real)."""
    probe = EdgeFleet.probe_async

    async def pinned(self: EdgeFleet, *args: Any, **kwargs: Any) -> Any:
        results = await probe(self, *args, **kwargs)
        for result in results:
            if result.reachable:
                result.facts.update(cores=CORES, load1=0.0)
        return results

    monkeypatch.setattr(EdgeFleet, "probe_async", pinned)


def submit_two(home: Path, tmp_path: Path, node: str, run: str) -> tuple[Jobs, Job]:
    """A script job of two inputs on one node."""
    directory = tmp_path / "inputs"
    directory.mkdir()
    for name in ("a", "b"):
        (directory / f"{name}.txt").write_text(f"{name}\n")
    jobs = Jobs(EdgeFleet(home))
    return jobs, jobs.submit("script", [str(directory)], selector=node, params={"run": run})


def times(home: Path, job_id: str) -> list[tuple[float, float]]:
    """Each input's (start, end) as its command wrote them, earliest start first."""
    directory = home / "results" / job_id
    spans = [
        (float((directory / f"{s}.start").read_text()), float((directory / f"{s}.end").read_text()))
        for s in ("a", "b")
    ]
    return sorted(spans)


def attempts(jobs: Jobs, job_id: str) -> list[dict[str, Any]]:
    tasks = jobs.show(job_id)["tasks"]
    assert len(tasks) == 2 and all(len(t["inputs"]) == 1 for t in tasks), tasks  # two tasks
    return [t["attempts"][-1] for t in tasks]


@pytest.mark.fleet
@pytest.mark.usefixtures("idle_cores")
def test_a_gate_of_one_runs_two_tasks_of_a_node_one_after_the_other(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler is told each task started once, when it began computing: the second
    one's news comes after the first one ended, not when its upload did."""
    started: list[tuple[str, float]] = []
    tell = Dispatcher.task_started

    def noted(self: Dispatcher, task_id: str, node: str, now: float) -> None:
        started.append((task_id, now))
        tell(self, task_id, node, now)

    monkeypatch.setattr(Dispatcher, "task_started", noted)
    home = make_home(tmp_path, fleet)
    jobs, job = submit_two(home, tmp_path, fleet.nodes[0].name, TIMED)
    assert jobs.run(job.id, options=replace(ONCE, gate=1)) == JobState.DONE
    assert [a["gate"] for a in attempts(jobs, job.id)] == [1, 1]
    (_, first_end), (second_start, _) = times(home, job.id)
    assert second_start >= first_end  # the second waited for the first's token
    assert sorted(t for t, _ in started) == [f"{job.id}/a.txt", f"{job.id}/b.txt"]
    assert max(at for _, at in started) >= first_end
    remove_given_up_markers(fleet)


@pytest.mark.fleet
@pytest.mark.parametrize("gate", [None, 0], ids=["free-cores", "off"])
@pytest.mark.usefixtures("idle_cores")
def test_without_a_gate_that_binds_two_tasks_of_a_node_overlap(
    fleet: Fleet, tmp_path: Path, gate: int | None
) -> None:
    """By default the gate is the node's free cores (none for the favoured task): four
    here, so both run at once, as they do with the gate off."""
    home = make_home(tmp_path, fleet)
    jobs, job = submit_two(home, tmp_path, fleet.nodes[0].name, TIMED)
    assert jobs.run(job.id, options=replace(ONCE, gate=gate)) == JobState.DONE
    for attempt in attempts(jobs, job.id):
        favoured = attempt["nice"] == remote.NICE_FAVOURED
        assert attempt["gate"] == (0 if gate == 0 or favoured else CORES)
    (_, first_end), (second_start, _) = times(home, job.id)
    assert second_start < first_end - 0.3
    remove_given_up_markers(fleet)


def _group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies have exited)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[2] == str(pgid) and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


@contextlib.contextmanager
def running(jobs: Jobs, job_id: str, options: ExecOptions) -> Iterator[list[JobState]]:
    """The job's executor in a thread; cancelled and joined at the end whatever happens."""
    ended: list[JobState] = []
    thread = threading.Thread(target=lambda: ended.append(jobs.run(job_id, options=options)))
    thread.start()
    try:
        yield ended
    finally:
        if thread.is_alive():
            jobs.cancel(job_id)
        thread.join(timeout=60)


@pytest.mark.fleet
@pytest.mark.usefixtures("idle_cores")
def test_a_task_waiting_at_the_gate_is_cancelled_leaving_no_process_and_a_free_token(
    fleet: Fleet, tmp_path: Path
) -> None:
    node = fleet.nodes[1]
    tasks_dir = Path(node.workdir) / "tasks"
    home = make_home(tmp_path, fleet)
    marker = f"edgectl-gate-{os.getpid()}"
    jobs, job = submit_two(home, tmp_path, node.name, f"sleep 300 # {marker}")
    with running(jobs, job.id, replace(ONCE, gate=1)) as ended:
        computing: list[Path] = []
        waiting: list[Path] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (computing and waiting):
            runs = [r for r in tasks_dir.glob("t*") if (r / "pid").exists()]
            computing = [r for r in runs if (r / "gated").exists()]
            waiting = [r for r in runs if not (r / "gated").exists()]
            time.sleep(0.1)
        assert len(computing) == 1 and len(waiting) == 1, (computing, waiting)
        time.sleep(0.5)  # a few polls: the waiting one keeps waiting, its input unclaimed
        assert not (waiting[0] / "gated").exists()
        assert not (waiting[0] / "claims" / "0").exists()
        pids = [int((r / "pid").read_text()) for r in (*computing, *waiting)]
        assert all(_group_members(p) for p in pids)
        jobs.cancel(job.id)
    assert ended == [JobState.CANCELLED]
    for pid in pids:  # every process of both runners is gone, the waiting one's too
        assert _group_members(pid) == []
    assert not [a for a in _live_args(node.user or "") if marker in a]
    # The waiting task may have been taken back and placed again meanwhile: an attempt
    # ended before its start leaves only a marker.
    remove_given_up_markers(fleet)
    # The token is free again: taken at once here, then by a later task of the node.
    token = Path(node.workdir) / "gate" / "0"
    with token.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "c.txt").write_text("c\n")
    later = jobs.submit(
        "script",
        [str(tmp_path / "later")],
        selector=node.name,
        params={"run": "echo ran > out/{stem}.out"},
    )
    assert jobs.run(later.id, options=replace(ONCE, gate=1)) == JobState.DONE
    assert (home / "results" / later.id / "c.out").read_text() == "ran\n"
    remove_given_up_markers(fleet)


def test_the_inputs_of_a_task_waiting_at_the_gate_can_all_be_taken_back(tmp_path: Path) -> None:
    """No server: the node scripts run here. The runner claims its first input only past
    the gate, so a waiting task gives every input back, then ends having run none."""
    run = "ta.1-00aa"
    canary = tmp_path / "ran"
    items = [{"name": f"i{j}.txt", "path": str(tmp_path / f"i{j}.txt")} for j in range(2)]
    for item in items:
        Path(item["path"]).write_text(item["name"])
    payload = get_kind("script").payload({"run": f"touch {canary}"}, items)
    data = remote.pack_task(payload.files, payload.run_sh, payload.runners)
    (tmp_path / "gate").mkdir()

    def node(script: str, *args: str, data: bytes = b"") -> str:
        argv = remote.sh(script, str(tmp_path), *args)
        done = subprocess.run(argv, input=data, capture_output=True, timeout=30, check=True)
        return done.stdout.decode()

    with (tmp_path / "gate" / "0").open("a") as token:
        fcntl.flock(token, fcntl.LOCK_EX)  # the node's only core is busy
        node(remote.START, run, "0", str(remote.NICE), "1", data=data)
        time.sleep(0.5)
        [report] = remote.parse_poll(node(remote.POLL, run), [run], 1 << 20, 1 << 20).values()
        assert report.state == "running" and not report.computing
        assert sorted(node(remote.TAKEBACK, run, "0", "1").split()) == ["0", "1"]
    for _ in range(100):  # the token is free: the runner goes on, and skips both inputs
        if (tmp_path / "tasks" / run / "status").exists():
            break
        time.sleep(0.05)
    [report] = remote.parse_poll(node(remote.POLL, run), [run], 1 << 20, 1 << 20).values()
    assert report.state == "finished" and report.exit_status == 0
    assert report.skipped == {0, 1}
    assert not canary.exists()


def test_a_task_of_a_higher_priority_job_goes_through_the_gate_first(tmp_path: Path) -> None:
    """No server: the node scripts run here. The high-priority task waits for token 0,
    which is held; the low one could take token 1 but waits behind it; a stale entry of a
    runner that is gone holds nothing up."""
    order = tmp_path / "order"
    (tmp_path / "gate").mkdir()
    stale = tmp_path / "gate" / "wait.999999999"
    stale.write_text("9 tz.1-00zz\n")  # a runner long gone: no such directory

    def node(script: str, *args: str, data: bytes = b"") -> str:
        argv = remote.sh(script, str(tmp_path), *args)
        done = subprocess.run(argv, input=data, capture_output=True, timeout=30, check=True)
        return done.stdout.decode()

    def start(run: str, gate: str, priority: str) -> None:
        item = tmp_path / f"{run[:2]}.txt"
        item.write_text(run[:2] + "\n")
        payload = get_kind("script").payload(
            {"run": f"cat {{input}} >> {order}"}, [{"name": item.name, "path": str(item)}]
        )
        data = remote.pack_task(payload.files, payload.run_sh, payload.runners)
        node(remote.START, run, "0", str(remote.NICE), gate, priority, data=data)

    def finished(run: str) -> bool:
        return (tmp_path / "tasks" / run / "status").exists()

    with (tmp_path / "gate" / "0").open("a") as token:
        fcntl.flock(token, fcntl.LOCK_EX)
        start("hi.1-00aa", "1", "5")
        start("lo.1-00bb", "2", "0")
        time.sleep(1.0)  # five rounds of the waiting loop
        assert not (tmp_path / "tasks" / "hi.1-00aa" / "gated").exists()
        assert not (tmp_path / "tasks" / "lo.1-00bb" / "gated").exists()
        assert not stale.exists()
    for _ in range(200):
        if finished("hi.1-00aa") and finished("lo.1-00bb"):
            break
        time.sleep(0.05)
    assert order.read_text().split() == ["hi", "lo"]
    assert not list((tmp_path / "gate").glob("wait.*"))


def test_an_attempt_stored_before_the_gate_loads_as_ungated() -> None:
    stored = {"id": "ta", "job_id": "j1", "inputs": [], "state": "running"}
    stored["attempts"] = [{"node": "n01", "run": "ta.1-00aa", "nice": remote.NICE}]
    [attempt] = Task.from_dict(stored).attempts
    assert attempt.gate == 0
    assert Task.from_dict(Task.from_dict(stored).to_dict()).attempts[0].gate == 0
