"""The job engine on the real-sshd fleet: spread, verified pull, node faults, crash and resume, cancel."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.jobs import remote
from edgectl.jobs.executor import ExecOptions
from edgectl.jobs.model import Job, JobState
from edgectl.jobs.placement import scheduler_config
from edgectl.jobs.service import Jobs
from edgectl.scheduler import SchedulerConfig
from tests.cli import run_cli
from tests.fleet import Fleet
from tests.test_fleet_view import make_home

pytestmark = pytest.mark.fleet

FAST = ExecOptions(op_timeout=5.0, lease=4.0, poll_max=0.5)
# A stalled task is ended after 3 s here (60 s by default).
STALLS = replace(
    FAST, scheduler=replace(scheduler_config(FAST.poll_max, FAST.reprobe_s), stall_min_s=3.0)
)


def make_inputs(directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"in{i:03d}.txt"
        path.write_text(f"input number {i}\n" * (i + 1))
        paths.append(path)
    return paths


def submit_script(home: Path, tmp_path: Path, run: str) -> tuple[Jobs, Job]:
    """A `script` job over the inputs under tmp_path/inputs on the n* nodes, submitted."""
    jobs = Jobs(EdgeFleet(home))
    job = jobs.submit("script", [str(tmp_path / "inputs")], selector="n*", params={"run": run})
    return jobs, job


def expected_output(path: Path) -> bytes:
    return path.read_text().upper().encode()


def check_results(home: Path, job_id: str, inputs: list[Path]) -> None:
    """Every input's output stored once, verified, and nothing else in the directory."""
    directory = home / "results" / job_id
    names = sorted(p.name for p in directory.iterdir())
    wanted = sorted(f"{p.stem}.up" for p in inputs)
    assert names == sorted([*wanted, "manifest.json"])
    manifest = json.loads((directory / "manifest.json").read_text())
    assert sorted(f["name"] for f in manifest["files"]) == wanted  # once each
    for entry in manifest["files"]:
        data = (directory / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    for path in inputs:
        assert (directory / f"{path.stem}.up").read_bytes() == expected_output(path)


UPPER = "tr a-z A-Z < {input} > out/{stem}.up"


def remove_given_up_markers(fleet: Fleet) -> None:
    """Check that the only task directories left on the nodes are markers of attempts given
    up before they started (a cleanup removes them after ten minutes), and remove them, so
    that later tests find the nodes clean."""
    for node in fleet.nodes:
        for left in (Path(node.workdir) / "tasks").glob("t*"):
            assert [p.name for p in left.iterdir()] == [".claim"], left
            assert os.readlink(left / ".claim").startswith("gone "), left
            shutil.rmtree(left)


def test_forty_inputs_spread_over_the_fleet_each_result_once(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    inputs = make_inputs(tmp_path / "inputs", 40)
    result = run_cli(
        home,
        "job",
        "submit",
        "script",
        str(tmp_path / "inputs"),
        "--on",
        "n*",
        "--run",
        UPPER,
        "--wait",
        "--json",
    )
    assert result.exit_status == 0, result.stderr
    document = result.json
    assert document["state"] == "done"
    check_results(home, document["id"], inputs)
    used = {t["node"] for t in document["tasks"]}
    assert len(used) >= 3, used  # spread, not piled on one node
    primaries = [t for t in document["tasks"] if not t["duplicate_of"]]
    assert sum(len(t["inputs"]) for t in primaries) == 40  # each input in one task
    copies = [t for t in document["tasks"] if t["duplicate_of"]]  # speculative, at the tail
    assert len(copies) <= 4
    # The remote task directories are cleaned up.
    for node in fleet.nodes:
        assert not list((Path(node.workdir) / "tasks").glob("t*"))
    shown = run_cli(home, "job", "show", document["id"][:12], "--json").json
    assert shown["id"] == document["id"]
    listed = run_cli(home, "job", "results", document["id"], "--json").json
    assert len(listed["files"]) == 40


def test_failing_command_fails_on_two_nodes_with_both_reasons(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    make_inputs(tmp_path / "inputs", 1)
    result = run_cli(
        home,
        "job",
        "submit",
        "script",
        str(tmp_path / "inputs"),
        "--on",
        "n*",
        "--run",
        "echo broken-on-purpose >&2; exit 3",
        "--wait",
        "--json",
    )
    assert result.exit_status == 7
    [task] = result.json["tasks"]
    assert task["state"] == "failed"
    assert len({a["node"] for a in task["attempts"]}) == 2
    assert task["error"].count("exit status 3") == 2 and "broken-on-purpose" in task["error"]


def test_hung_node_mid_job_and_the_job_still_completes(fleet_factory, tmp_path: Path) -> None:
    fleet = fleet_factory(3)
    home = make_home(tmp_path, fleet)
    inputs = make_inputs(tmp_path / "inputs", 24)
    jobs, job = submit_script(home, tmp_path, "sleep 0.3; " + UPPER)
    stopped: list[psutil.Process] = []

    def hang_node() -> None:
        # The listener and every session process it forked: open connections hang too.
        listener = psutil.Process(fleet.pids[0])
        for process in [listener, *listener.children(recursive=True)]:
            if process.name() == "sshd" or process.pid == listener.pid:
                process.suspend()
                stopped.append(process)

    stopper = threading.Timer(1.0, hang_node)
    stopper.start()
    started = time.monotonic()
    try:
        state = jobs.run(job.id, options=FAST)
    finally:
        stopper.join(timeout=35)
        for process in stopped:
            process.resume()
    assert state == JobState.DONE
    assert time.monotonic() - started < 60
    check_results(home, job.id, inputs)
    events = " ".join(e["text"] for e in jobs.logs(job.id))
    # Its work went elsewhere: the node lost after its lease, or a late task copied first.
    moved = ("lost", "taken back", "late on n01")
    assert "n01" in events and any(word in events for word in moved)


def _ps_args(user: str) -> list[str]:
    out = subprocess.run(["ps", "-u", user, "-o", "args="], capture_output=True, text=True)
    return out.stdout.splitlines()


def _live_args(user: str) -> list[str]:
    """The user's processes, less zombies: those have exited, and a killed one is listed
    until whatever adopted it reaps it, a moment later."""
    out = subprocess.run(["ps", "-u", user, "-o", "stat=,args="], capture_output=True, text=True)
    rows = [line.strip().split(None, 1) for line in out.stdout.splitlines() if line.strip()]
    return [row[1] for row in rows if len(row) == 2 and not row[0].startswith("Z")]


def _task_processes(user: str, task_ids: list[str]) -> list[str]:
    """The user's live processes that work in a directory of an attempt of one of these
    tasks (by their working directory): on the shared fleet, other tests' runs do not count.
    A process whose directory cannot be read counts too."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.username() != user or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            name = proc.name()
        except psutil.NoSuchProcess:
            continue  # it ended meanwhile
        try:
            cwd = proc.cwd()
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            cwd = ""
        if not cwd or any(f"/tasks/{task_id}." in cwd for task_id in task_ids):
            found.append(name)
    return found


def test_controller_killed_mid_job_then_resume_loses_and_doubles_nothing(
    fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, fleet)
    inputs = make_inputs(tmp_path / "inputs", 40)
    env = {**os.environ, "EDGECTL_HOME": str(home)}
    submit = [
        sys.executable,
        "-m",
        "edgectl",
        "job",
        "submit",
        "script",
        str(tmp_path / "inputs"),
        "--on",
        "n*",
        "--run",
        "sleep 0.4; " + UPPER,
        "--wait",
        "--json",
    ]
    proc = subprocess.Popen(submit, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    ledger = Jobs(EdgeFleet(home))
    [job] = ledger.list_jobs()
    assert job["state"] in ("running", "queued")
    result = run_cli(home, "job", "resume", job["id"], "--json")
    assert result.exit_status == 0, result.stderr
    assert result.json["state"] == "done"
    check_results(home, job["id"], inputs)
    leftovers = list((home / "results" / job["id"]).glob(".*"))
    assert leftovers == []
    # A start cut short by the kill leaves its attempt given up: a marker holding only its
    # claim, which a later cleanup removes after ten minutes. Nothing else of the job stays
    # on the nodes. The markers are removed here, so that later tests find the nodes clean.
    runs = {a["run"] for t in ledger.show(job["id"])["tasks"] for a in t["attempts"]}
    for node in fleet.nodes:
        for left in (Path(node.workdir) / "tasks").glob("t*"):
            assert left.name in runs
            assert [p.name for p in left.iterdir()] == [".claim"]
            assert os.readlink(left / ".claim").startswith("gone ")
            shutil.rmtree(left)


def test_cancel_leaves_no_process_on_any_node(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    make_inputs(tmp_path / "inputs", 8)
    marker = f"edgectl-cancel-{os.getpid()}"
    result = run_cli(
        home,
        "job",
        "submit",
        "script",
        str(tmp_path / "inputs"),
        "--on",
        "n*",
        "--run",
        f"sleep 300 # {marker}",
    )
    assert result.exit_status == 0, result.stderr
    job_id = result.stdout.strip()
    user = fleet.nodes[0].user or ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("sleep 300" in a for a in _ps_args(user)):
        time.sleep(0.2)
    assert any("sleep 300" in a for a in _ps_args(user)), "the tasks never started"
    cancelled = run_cli(home, "job", "cancel", job_id)
    assert cancelled.exit_status == 0, cancelled.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any("sleep 300" in a for a in _ps_args(user)):
        time.sleep(0.2)
    assert not any("sleep 300" in a for a in _ps_args(user))
    document = run_cli(home, "job", "show", job_id, "--json").json
    assert document["state"] == "cancelled"
    assert {t["state"] for t in document["tasks"]} <= {"cancelled", "done"}
    for node in fleet.nodes:  # nor their task directories
        assert not list((Path(node.workdir) / "tasks").glob("t*"))


def test_a_late_task_is_copied_first_result_wins_and_the_loser_is_killed(
    fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, fleet)
    inputs = make_inputs(tmp_path / "inputs", 8)
    shared = Path(tempfile.mkdtemp(prefix="edgectl-copy-"))  # the nodes' user writes there
    shared.chmod(0o777)
    marker = shared / "first-attempt-started"
    # The first attempt of in003 hangs; any later one (a copy) runs at once.
    slow = (
        f"if [ {{name}} = in003.txt ] && [ ! -e {marker} ]; then touch {marker}; sleep 67; fi; "
        + UPPER
    )
    jobs, job = submit_script(home, tmp_path, slow)
    one_per_chunk = SchedulerConfig(
        chunk_divisor=1000.0, duplicate_work_cap=1.0, report_delay_s=FAST.poll_max
    )
    started = time.monotonic()
    # No core gate: the hung attempt would hold a token of its node, and the tasks behind it
    # there, waiting, would look late and be copied too; this is about the one copy.
    state = jobs.run(job.id, options=replace(FAST, scheduler=one_per_chunk, gate=0))
    assert state == JobState.DONE
    assert time.monotonic() - started < 40  # not the 67 s of the hung attempt
    check_results(home, job.id, inputs)  # each output stored once
    tasks = jobs.show(job.id)["tasks"]
    # Other tasks, of a few milliseconds' work, may look late as well and be copied within
    # the budget: this is about in003's copy.
    [copy] = [t for t in tasks if t["duplicate_of"] and t["inputs"] == ["in003.txt"]]
    original = next(t for t in tasks if t["id"] == copy["duplicate_of"])
    assert copy["state"] == "done" and copy["inputs"] == ["in003.txt"]
    assert original["state"] == "cancelled" and copy["node"] in original["error"]
    assert copy["node"] != original["node"]
    user = fleet.nodes[0].user or ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any("sleep 67" in a for a in _ps_args(user)):
        time.sleep(0.2)
    assert not any("sleep 67" in a for a in _ps_args(user))  # the loser's group was killed
    for node in fleet.nodes:  # and its directory removed
        assert not list((Path(node.workdir) / "tasks").glob("t*"))
    assert jobs.show(job.id)["state"] == "done"
    shutil.rmtree(shared, ignore_errors=True)


def test_the_input_its_job_would_end_with_runs_niced_less_than_the_others(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Runners start niced; the scheduler's favoured task (here the one big input, whose
    work is a third of the job's) is niced less, to run ahead of the node's others."""
    home = make_home(tmp_path, fleet)
    inputs = make_inputs(tmp_path / "inputs", 10)
    (tmp_path / "inputs" / "big.txt").write_bytes(b"x" * 4_000_000)
    jobs, job = submit_script(home, tmp_path, "nice > out/{stem}.nice")
    copies_off = replace(scheduler_config(FAST.poll_max, FAST.reprobe_s), duplicates=False)
    assert jobs.run(job.id, options=replace(FAST, scheduler=copies_off)) == JobState.DONE
    directory = home / "results" / job.id
    assert (directory / "big.nice").read_text().strip() == str(remote.NICE_FAVOURED)
    for path in inputs:
        assert (directory / f"{path.stem}.nice").read_text().strip() == str(remote.NICE)
    shown = {t["inputs"][0]: t["attempts"][-1]["nice"] for t in jobs.show(job.id)["tasks"]}
    assert shown.pop("big.txt") == remote.NICE_FAVOURED
    assert set(shown.values()) == {remote.NICE}


def test_big_outputs_are_streamed_to_disk_and_small_ones_batched(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Outputs over the batch limit come home file by file through a temp file; the rest in
    as few execs as fit the limit. Every byte is checked against the manifest."""
    home = make_home(tmp_path, fleet)
    inputs = make_inputs(tmp_path / "inputs", 6)
    command = (
        "tr a-z A-Z < {input} > out/{stem}.up; "
        # a 300 KB output, different per input: its first line names the input
        "{ echo {stem}; head -c 300000 /dev/zero | tr '\\000' x; } > out/{stem}.big"
    )
    jobs, job = submit_script(home, tmp_path, command)
    state = jobs.run(job.id, options=replace(FAST, fetch_batch=64 * 1024))
    assert state == JobState.DONE
    directory = home / "results" / job.id
    for path in inputs:
        assert (directory / f"{path.stem}.up").read_bytes() == expected_output(path)
        big = (directory / f"{path.stem}.big").read_bytes()
        assert big == path.stem.encode() + b"\n" + b"x" * 300_000
    assert not list(directory.glob(".*"))  # no temp file left


def test_a_stalled_node_gives_back_the_inputs_it_has_not_started(
    fleet_factory, tmp_path: Path
) -> None:
    """A chunk of several inputs is stopped (SIGSTOP) in its first input while the node's
    sshd still answers: its unstarted inputs are claimed back on the node and run elsewhere;
    the input it was computing is then raced by a copy or ended as stalled. The first such
    chunk on either node is the one stopped: which node gets chunks of several inputs
    depends on the rates the scheduler measures on this machine."""
    fleet = fleet_factory(2)
    home = make_home(tmp_path, fleet)
    inputs = make_inputs(tmp_path / "inputs", 30)
    jobs, job = submit_script(home, tmp_path, "sleep 0.4; " + UPPER)
    # Chunks of at least min(4 s, an even split of the work left), and no slots past the
    # node's free cores: a chunk for such a slot is planned to start when a running one
    # ends, so it is cut shorter; with them, in some runs every chunk held one input.
    options = replace(STALLS, scheduler=replace(STALLS.scheduler, dispatch_s=0.4, extra_slots=0))
    stopped: list[int] = []
    tasks_dirs = [Path(node.workdir) / "tasks" for node in fleet.nodes]

    def in_first_of_several(run: Path) -> bool:
        """The runner has started its chunk's first input and has more to go."""
        with contextlib.suppress(OSError):
            inputs = run.joinpath("run.sh").read_text().count("mkdir claims/")
            claimed = len(list(run.joinpath("claims").iterdir()))
            return claimed == 1 and inputs > claimed and run.joinpath("pid").exists()
        return False

    def stall_one() -> None:
        deadline = time.monotonic() + 30
        while not stopped and time.monotonic() < deadline:
            for run in [run for tasks_dir in tasks_dirs for run in tasks_dir.glob("t*")]:
                if in_first_of_several(run):
                    with contextlib.suppress(ProcessLookupError, ValueError, OSError):
                        pid = int(run.joinpath("pid").read_text())
                        os.killpg(pid, signal.SIGSTOP)
                        stopped.append(pid)
                        break
            time.sleep(0.005)

    stopper = threading.Thread(target=stall_one, daemon=True)
    stopper.start()
    ended: list[JobState] = []
    runner = threading.Thread(target=lambda: ended.append(jobs.run(job.id, options=options)))
    runner.start()
    try:
        runner.join(timeout=120)
        if runner.is_alive():  # a hang: end it, then fail with what the job did
            jobs.cancel(job.id)
            runner.join(timeout=60)
            events = "\n".join(e["text"] for e in jobs.logs(job.id))
            pytest.fail(f"the job did not end within 120 s:\n{events}")
    finally:
        stopper.join(timeout=35)
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
    [state] = ended
    assert stopped, "no chunk of several inputs was seen computing its first"
    assert state == JobState.DONE
    check_results(home, job.id, inputs)
    events = " ".join(e["text"] for e in jobs.logs(job.id))
    assert "taken back before it started" in events
    assert "a copy of" in events or "no progress for" in events
    document = jobs.show(job.id)
    done = [name for t in document["tasks"] if t["state"] == "done" for name in t["inputs"]]
    assert len(done) == len(set(done)) == len(inputs)
    for tasks_dir in tasks_dirs:  # the stalled attempts were killed and removed
        assert not list(tasks_dir.glob("t*"))


@pytest.mark.parametrize("copies", [0.10, 1.0], ids=["default-budget", "raced"])
def test_a_task_that_hangs_is_ended_and_fails_after_two_nodes(
    fleet: Fleet, tmp_path: Path, copies: float
) -> None:
    """One input's command never ends (its node answers all along): it is ended as stalled,
    tried on a second node, then failed with both reasons; the other inputs are done.
    With a budget that lets it be raced, its copy hangs too and each attempt is ended."""
    home = make_home(tmp_path, fleet)
    inputs = make_inputs(tmp_path / "inputs", 8)
    command = "case {stem} in in003) sleep 600 ;; esac; " + UPPER
    jobs, job = submit_script(home, tmp_path, command)
    assert STALLS.scheduler is not None
    options = replace(STALLS, scheduler=replace(STALLS.scheduler, duplicate_work_cap=copies))
    started = time.monotonic()
    state = jobs.run(job.id, options=options)
    assert state == JobState.FAILED
    assert time.monotonic() - started < 120
    document = jobs.show(job.id)
    failed = [t for t in document["tasks"] if t["state"] == "failed"]
    assert failed and all(t["inputs"] == ["in003.txt"] for t in failed)
    # The task that failed for good names both nodes and both reasons (an attempt of a race
    # that failed while its rival still ran names its own node only).
    final = [t for t in failed if t["error"].count("no progress for") == 2]
    assert final, [t["error"] for t in failed]
    assert len({part.split(":")[0] for part in final[0]["error"].split("; ")}) == 2
    if copies == 1.0:
        events = " ".join(e["text"] for e in jobs.logs(job.id))
        assert "a copy of" in events
    done = sorted(name for t in document["tasks"] if t["state"] == "done" for name in t["inputs"])
    assert done == [p.name for p in inputs if p.stem != "in003"]
    for node in fleet.nodes:
        assert not [a for a in _live_args(node.user) if "sleep 600" in a]
    # The hung attempt holds a core token of its node: a task waiting behind it may be
    # taken back or raced, and an attempt ended before it started leaves a marker.
    remove_given_up_markers(fleet)


def test_a_runner_stuck_after_its_last_input_is_ended(fleet: Fleet, tmp_path: Path) -> None:
    """The command of one input is done but leaves a sparse 1 TB output: the runner would
    checksum it for many minutes before it reports. It is ended like a hung task."""
    home = make_home(tmp_path, fleet)
    make_inputs(tmp_path / "inputs", 3)
    command = "case {stem} in in001) truncate -s 1T out/{stem}.big ;; esac; " + UPPER
    jobs, job = submit_script(home, tmp_path, command)
    started = time.monotonic()
    state = jobs.run(job.id, options=STALLS)
    assert state == JobState.FAILED
    assert time.monotonic() - started < 90
    document = jobs.show(job.id)
    [failed] = [t for t in document["tasks"] if t["state"] == "failed"]
    assert failed["inputs"] == ["in001.txt"]
    assert failed["error"].count("no progress for") == 2
    ids = [t["id"] for t in document["tasks"]]
    for node in fleet.nodes:
        assert not [a for a in _task_processes(node.user, ids) if "sha256sum" in a]
