"""The node-side claim on each attempt, in a real sh against real processes: a start and a
give-up race for it, and an attempt given up can never start (a start exec orphaned by a
killed controller must not launch its runner after the next controller placed the work
elsewhere). No server: the node scripts run here as they would over SSH."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from edgectl.jobs import remote
from edgectl.jobs.kinds import get_kind
from edgectl.jobs.model import Task, TaskState

RUN = "ta.1-00aa"


def node(
    workdir: Path, script: str, *args: str, data: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        remote.sh(script, str(workdir), *args), input=data, capture_output=True, timeout=30
    )


def payload(command: str) -> bytes:
    return remote.pack_task({"x.txt": b"input\n"}, command)


def poll(workdir: Path, run: str = RUN) -> str:
    out = node(workdir, remote.POLL, run).stdout.decode()
    return out.split("\t")[0]


def marker_only(directory: Path) -> bool:
    """Only the claim is left, and it says the attempt was given up."""
    names = [p.name for p in directory.iterdir()]
    return names == [".claim"] and os.readlink(directory / ".claim").startswith("gone ")


def test_an_attempt_given_up_before_its_start_never_runs(tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    assert node(tmp_path, remote.KILL, RUN).returncode == 0
    started = node(
        tmp_path, remote.START, RUN, "0", str(remote.NICE), data=payload(f"touch {canary}")
    )
    assert started.returncode == 89
    assert b"given up" in started.stderr
    time.sleep(0.3)
    assert not canary.exists()
    assert marker_only(tmp_path / "tasks" / (RUN))


def test_a_start_that_loses_the_claim_mid_way_removes_its_files_and_never_runs(
    tmp_path: Path,
) -> None:
    """The start made the directory and was unpacking when a cleanup gave the attempt up."""
    canary = tmp_path / "ran"
    directory = tmp_path / "tasks" / (RUN)
    # The start blocks in its unpacking (stdin held open) after making the directory.
    start = subprocess.Popen(
        remote.sh(remote.START, str(tmp_path), RUN, "0", str(remote.NICE)),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert start.stdin is not None
    try:
        for _ in range(100):
            if directory.is_dir():
                break
            time.sleep(0.02)
        assert directory.is_dir()
        cleanup = node(tmp_path, remote.CLEANUP, "600", RUN)
        assert cleanup.returncode == 0
        start.stdin.write(payload(f"touch {canary}"))
        start.stdin.close()
        assert start.wait(timeout=10) == 89
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()
    time.sleep(0.3)
    assert not canary.exists()
    assert marker_only(directory)


def test_a_started_attempt_is_killed_not_given_up(tmp_path: Path) -> None:
    started = node(tmp_path, remote.START, RUN, "0", str(remote.NICE), data=payload("sleep 60"))
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.decode().split("pid=")[1].split()[0])
    assert poll(tmp_path, RUN) == "R"
    assert node(tmp_path, remote.KILL, RUN).returncode == 0
    time.sleep(0.2)
    assert not _alive(pid)
    assert not (tmp_path / "tasks" / (RUN)).exists()


def test_the_runner_runs_at_the_niceness_given_with_the_pid_recorded(tmp_path: Path) -> None:
    """setsid and nice exec in place: the recorded pid is the runner itself, niced."""
    started = node(
        tmp_path, remote.START, RUN, "0", str(remote.NICE_FAVOURED), data=payload("sleep 60")
    )
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.decode().split("pid=")[1].split()[0])
    try:
        cmdline = Path(f"/proc/{pid}/cmdline")
        for _ in range(100):  # until setsid and then nice have exec'd the runner's sh
            if cmdline.read_bytes().split(b"\0")[:2] == [b"sh", b"./runner.sh"]:
                break
            time.sleep(0.02)
        assert cmdline.read_bytes().split(b"\0")[:2] == [b"sh", b"./runner.sh"]
        stat = Path(f"/proc/{pid}/stat").read_text()
        niceness = int(stat.rsplit(")", 1)[1].split()[16])  # field 19: after comm, the 17th
        assert niceness == remote.NICE_FAVOURED
    finally:
        assert node(tmp_path, remote.KILL, RUN).returncode == 0


def test_a_poll_gives_up_what_has_not_started_and_waits_for_a_start_that_holds_the_claim(
    tmp_path: Path,
) -> None:
    assert poll(tmp_path, RUN) == "G"
    assert poll(tmp_path, RUN) == "G"  # a marker stays given up
    claimed = tmp_path / "tasks" / "tb.1-00bb"
    claimed.mkdir()
    (claimed / ".claim").symlink_to("started")  # its start won; its pid comes next
    assert poll(tmp_path, "tb.1-00bb") == "W"
    (claimed / "pid").write_text("999999999\n")  # no such process, and no status
    assert poll(tmp_path, "tb.1-00bb") == "L"


def test_a_cleanup_removes_given_up_markers_only_once_they_are_old(tmp_path: Path) -> None:
    node(tmp_path, remote.KILL, RUN)
    marker = tmp_path / "tasks" / (RUN)
    assert marker_only(marker)
    node(tmp_path, remote.CLEANUP, "600", RUN)
    assert marker_only(marker)  # young: an orphaned start may still be on its way
    os.remove(marker / ".claim")
    (marker / ".claim").symlink_to(f"gone {int(time.time()) - 700}")
    node(tmp_path, remote.CLEANUP, "600")
    assert not marker.exists()


def test_each_attempt_has_a_directory_of_its_own_even_after_a_retry() -> None:
    task = Task(id="t1", job_id="j1", inputs=[], state=TaskState.QUEUED)
    assert task.run_name() == "t1"  # a ledger from before attempts had directories
    first = task.new_attempt("n1", 0.0)
    second = task.new_attempt("n2", 0.0)
    assert first.run != second.run and task.run_name() == second.run
    task.attempts = []  # what `job retry` does
    again = task.new_attempt("n1", 0.0)
    assert again.run not in (first.run, second.run)
    for attempt in (first, second, again):
        assert attempt.run is not None and remote.check_run_name(attempt.run) == attempt.run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie not yet reaped by its parent counts as gone.
    return _field(Path(f"/proc/{pid}/stat"), 2) not in ("Z", "")


def test_kill_leaves_no_process_of_a_started_attempt(tmp_path: Path) -> None:
    started = node(
        tmp_path, remote.START, RUN, "0", str(remote.NICE), data=payload("sleep 60 & sleep 60")
    )
    pid = int(started.stdout.decode().split("pid=")[1].split()[0])
    for _ in range(100):  # the runner makes its own session (setsid) just after its fork
        if os.getpgid(pid) == pid:
            break
        time.sleep(0.01)
    assert os.getpgid(pid) == pid
    node(tmp_path, remote.KILL, RUN)
    time.sleep(0.2)
    members = [
        int(stat.parent.name)
        for stat in Path("/proc").glob("[0-9]*/stat")
        if _field(stat, 4) == str(pid) and _field(stat, 2) != "Z"
    ]
    for member in members:
        os.kill(member, signal.SIGKILL)
    assert members == []


def _field(stat: Path, index: int) -> str:
    """A field of /proc/<pid>/stat after the command name (2: state, 4: process group)."""
    try:
        text = stat.read_text()
    except OSError:
        return ""
    return text.rsplit(")", 1)[1].split()[index - 2]


def test_inputs_not_started_can_be_taken_back_and_the_runner_skips_them(tmp_path: Path) -> None:
    """A chunk of three: while the first runs, the other two are taken back."""
    gate = tmp_path / "gate"
    items = [{"name": f"i{j}.txt", "path": str(tmp_path / f"i{j}.txt")} for j in range(3)]
    for item in items:
        Path(item["path"]).write_text(item["name"])
    payload = get_kind("script").payload(
        {"run": f"while [ ! -e {gate} ]; do sleep 0.05; done; cp {{input}} out/{{stem}}.out"},
        items,
    )
    data = remote.pack_task(payload.files, payload.run_sh, payload.runners)
    started = node(tmp_path, remote.START, RUN, "0", str(remote.NICE), data=data)
    assert started.returncode == 0, started.stderr
    for _ in range(100):  # the first input is claimed by the runner as it starts
        if (tmp_path / "tasks" / RUN / "claims" / "0").is_dir():
            break
        time.sleep(0.02)
    taken = node(tmp_path, remote.TAKEBACK, RUN, "0", "2", "1").stdout.decode().split()
    assert sorted(taken) == ["1", "2"]  # the running one stays
    gate.touch()
    for _ in range(200):
        if (tmp_path / "tasks" / RUN / "status").exists():
            break
        time.sleep(0.05)
    reports = remote.parse_poll(
        node(tmp_path, remote.POLL, RUN).stdout.decode(), [RUN], 1 << 20, 1 << 20
    )
    report = reports[RUN]
    assert report.state == "finished" and report.exit_status == 0
    assert report.skipped == {1, 2}
    assert [e.name for e in report.manifest or []] == ["i0.out"]
    # A finished task gives nothing back.
    assert node(tmp_path, remote.TAKEBACK, RUN, "1").stdout == b""


def test_a_start_says_how_long_it_waited_for_a_quick_task(tmp_path: Path) -> None:
    """A task done within the start's wait is reported by the start, with the steps waited:
    its time counts from the runner's launch, not from the reply (about none at all)."""
    begun = time.monotonic()
    started = node(tmp_path, remote.START, RUN, "50", str(remote.NICE), data=payload("sleep 0.3"))
    took = time.monotonic() - begun
    assert started.returncode == 0, started.stderr
    out = started.stdout.decode()
    waited = remote.start_number(out, "waited") or 0
    assert remote.parse_poll(out, [RUN], 1 << 20, 1 << 20)[RUN].state == "finished"
    # It waited (0.3 s of sleep), stopped when the status came, well before its 50 steps,
    # and each step took at least its 20 ms: the launch it implies is within the start.
    assert 1 <= waited < 50
    assert waited * remote.START_STEP_S <= took


def test_a_start_that_waited_its_steps_out_says_so(tmp_path: Path) -> None:
    started = node(tmp_path, remote.START, RUN, "5", str(remote.NICE), data=payload("sleep 60"))
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.decode().split("pid=")[1].split()[0])
    try:
        assert remote.start_number(started.stdout.decode(), "waited") == 5
        report = remote.parse_poll(started.stdout.decode(), [RUN], 1 << 20, 1 << 20)
        assert report[RUN].state != "finished"  # nothing said of it: a poll will tell
    finally:
        assert node(tmp_path, remote.KILL, RUN).returncode == 0
    time.sleep(0.2)
    assert not _alive(pid)
