"""A hostile node: its shell account rewrites the runner's output, manifest and status.

Each attack is a script job whose command plays the attacker: it writes the files it
likes into the task directory (out/, `manifest`, `status`, the logs), then kills the
node-side runner so that what it wrote is what the controller reads. Every attack must
end in a clear per-task error (or be capped), and nothing may be written outside
results/<job-id>/: the canary tree around EDGECTL_HOME is fingerprinted before and after.
"""

from __future__ import annotations

import base64
import hashlib
import os
import resource
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.inventory.model import Node
from edgectl.jobs.executor import ExecOptions
from edgectl.jobs.model import JobState
from edgectl.jobs.service import Jobs
from tests.cli import run_cli
from tests.fleet import Fleet
from tests.hostile.conftest import CanaryTree, Figures

pytestmark = pytest.mark.fleet

FAST = ExecOptions(
    op_timeout=5.0, lease=4.0, poll_max=0.3, max_file=1 << 20, max_task_output=4 << 20
)


def fleet_home(home: Path, fleet: Fleet) -> Path:
    """An EDGECTL_HOME holding the fleet's nodes, trusting their host keys."""
    EdgeFleet(home).add_nodes([Node(**node.to_dict()) for node in fleet.nodes])
    fleet.write_known_hosts(home / "known_hosts")
    return home


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def line(name: bytes, data: bytes, size: int | None = None, digest: str | None = None) -> bytes:
    """One manifest line as the runner writes them: sha256, size, name (tab-separated)."""
    shown = str(len(data) if size is None else size).encode()
    return (digest or sha(data)).encode() + b"\t" + shown + b"\t" + name + b"\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Attack:
    """What the hostile account leaves in the task directory, and the error expected."""

    name: str
    setup: str  # shell run in the task directory before the manifest is planted
    manifest: bytes | None  # None: no manifest file at all
    status: bytes = b"0\n"
    expect: str = ""  # a phrase of the task's error
    stored: tuple[str, ...] = ()  # result files that may legitimately arrive

    def command(self) -> str:
        """The script job's --run: plant the files, then kill the runner ($PPID)."""
        parts = ["kill -9 $PPID", "rm -f manifest status", self.setup or ":"]
        if self.manifest is not None:
            parts.append(f"printf %s {b64(self.manifest)} | base64 -d > manifest.tmp")
            parts.append("mv manifest.tmp manifest")
        parts.append(f"printf %s {b64(self.status)} | base64 -d > status.tmp")
        parts.append("mv status.tmp status")
        return "; ".join(parts)


PASSWD = Path("/etc/passwd").read_bytes()
HELLO = b"hello\n"

ATTACKS = [
    Attack(
        "name ../../x",
        "printf 'hello\\n' > out/x",
        line(b"../../x", HELLO),
        expect="refused output name",
    ),
    Attack("name /etc/passwd", "", line(b"/etc/passwd", PASSWD), expect="refused output name"),
    Attack("name a/../../b", "", line(b"a/../../b", HELLO), expect="refused output name"),
    Attack("name with NUL", "printf 'hello\\n' > out/ab", line(b"a\x00b", HELLO), expect="refused"),
    Attack("name with newline", "", line(b"a\nb", HELLO), expect="malformed manifest line"),
    Attack(
        "name with ANSI escapes",
        "",
        line(b"\x1b[2J\x1b[31mred", HELLO),
        expect="refused output name",
    ),
    Attack(
        "name manifest.json",
        "printf 'hello\\n' > out/manifest.json",
        line(b"manifest.json", HELLO),
        expect="reserved",
    ),
    Attack(
        "symlink out of the task directory",
        "ln -s /etc/passwd out/link",
        line(b"link", PASSWD),
        expect="not a regular file",
    ),
    Attack(
        "symlink loop",
        "ln -s b out/a; ln -s a out/b",
        line(b"a", HELLO),
        expect="not a regular file",
    ),
    Attack(
        "sparse 1 TB result",
        "truncate -s 1T out/big",
        line(b"big", b"", size=1 << 40, digest="0" * 64),
        expect="over the",
    ),
    Attack(
        "2 GB result under a manifest claiming 6 bytes",
        "truncate -s 2G out/big",
        line(b"big", HELLO),
        expect="download failed",
    ),
    Attack(
        "sha256 mismatch",
        "printf 'hello\\n' > out/f",
        line(b"f", HELLO, digest=sha(b"HELLO\n")),
        expect="sha256 does not match",
    ),
    Attack("success status without a manifest", "", None, expect="no manifest"),
    Attack(
        "success status with a torn status file",
        "",
        b"",
        status=b"\x1b[31m0",
        expect="unreadable status",
    ),
    Attack(
        "more outputs than the cap",
        "",
        b"".join(line(f"f{i}".encode(), HELLO) for i in range(10_002)),
        expect="more than",
    ),
    Attack(
        "outputs over the total cap",
        "",
        b"".join(line(f"f{i}".encode(), b"", size=1 << 20, digest="0" * 64) for i in range(6)),
        expect="total over",
    ),
    Attack(
        "unrequested extra files beside one listed result",
        "printf 'hello\\n' > out/f; printf 'evil\\n' > out/.hidden; printf 'evil\\n' > extra",
        line(b"f", HELLO),
        expect="",
        stored=("f",),
    ),
]


# Outputs come home in one exec when small, streamed to disk file by file when big: every
# attack is tried both ways (a batch limit of 0 streams them all).
FETCH_MODES = {"one exec": FAST, "streamed": replace(FAST, fetch_batch=0)}


def run_attack(
    home: Path, inputs: Path, attack: Attack, options: ExecOptions = FAST
) -> tuple[JobState, dict[str, object]]:
    jobs = Jobs(EdgeFleet(home))
    job = jobs.submit("script", [str(inputs)], selector="n01", params={"run": attack.command()})
    state = jobs.run(job.id, options=options)
    return state, jobs.show(job.id)


@pytest.mark.parametrize("mode", list(FETCH_MODES))
def test_every_hostile_result_is_refused_and_nothing_lands_outside_the_results(
    fleet: Fleet, canary_tree: CanaryTree, figures: Figures, tmp_path: Path, mode: str
) -> None:
    home = fleet_home(canary_tree.home, fleet)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "one.txt").write_text("one\n")
    failures = []
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for attack in ATTACKS:
        started = time.monotonic()
        state, document = run_attack(home, inputs, attack, FETCH_MODES[mode])
        [task] = document["tasks"]  # type: ignore[misc]
        error = task["error"] or ""
        directory = home / "results" / str(document["id"])
        stored = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
        extra = set(stored) - {"manifest.json", *attack.stored}
        if attack.stored:
            ok = state == JobState.DONE and not extra and set(attack.stored) <= set(stored)
        else:
            ok = state == JobState.FAILED and attack.expect in error and not extra
        ok = ok and "\x1b" not in error and time.monotonic() - started < 30
        figures.attack(f"hostile node: {attack.name} ({mode})", ok)
        if not ok:
            failures.append((attack.name, state, error[:200], stored))
    written = canary_tree.written_outside()
    figures.zero("bytes outside the results root", "hostile node results", written)
    # The controller read nothing big into memory: its peak grew by far less than 2 GB.
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    figures.attack(
        f"hostile node: controller memory stays bounded ({mode})", grown_kib < 256 * 1024
    )
    assert failures == [], "\n".join(map(repr, failures))
    assert written == 0
    assert grown_kib < 256 * 1024


def test_hostile_stderr_and_logs_reach_no_terminal_raw_and_cost_no_timeout(
    fleet: Fleet, figures: Figures, tmp_path: Path
) -> None:
    """ANSI escapes on stderr; logs replaced by /dev/zero: errors stay plain, reads bounded."""
    home = fleet_home(tmp_path / "home", fleet)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "one.txt").write_text("one\n")
    escape = "\\033]0;owned\\007\\033[2J\\033[31m[/owned]"
    run = (
        f"printf '{escape}bad things\\n' >&2; rm -f stdout.log; ln -s /dev/zero stdout.log; exit 3"
    )
    jobs = Jobs(EdgeFleet(home))
    job = jobs.submit("script", [str(inputs)], selector="n01", params={"run": run})
    started = time.monotonic()
    state = jobs.run(job.id, options=FAST)
    took = time.monotonic() - started
    shown = run_cli(home, "job", "show", job.id, tty=False)
    drawn = run_cli(home, "job", "show", job.id, tty=True)  # rich: "[/owned]" is no markup
    logs_started = time.monotonic()
    logs = run_cli(home, "job", "logs", job.id)
    logs_took = time.monotonic() - logs_started
    [task] = jobs.show(job.id)["tasks"]
    printed = shown.stdout + shown.stderr
    plain = "\x1b" not in printed and "\x07" not in printed and drawn.exit_status == 0
    plain = plain and "[/owned]" in drawn.stdout and "\x1b]0" not in drawn.stdout
    figures.attack("hostile node: ANSI escapes in a task's stderr", plain)
    figures.attack("hostile node: a log file replaced by /dev/zero", logs_took < 4.0)
    assert state == JobState.FAILED and "exit status 3" in task["error"]
    assert "bad things" in task["error"]
    assert plain, shown.stdout
    assert took < 10
    assert logs_took < 4.0
    assert len(logs.stdout) <= 200_000


def test_gigabytes_of_stdout_from_a_command_are_capped(
    fleet: Fleet, figures: Figures, tmp_path: Path
) -> None:
    """`edgectl run` of a command printing without end: cut at the cap, memory bounded."""
    home = fleet_home(tmp_path / "home", fleet)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = run_cli(home, "run", "n01", "--json", "--", "cat", "/dev/zero")
    took = time.monotonic() - started
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    [outcome] = result.json
    ok = outcome["truncated"] is True and took < 20 and grown_kib < 400 * 1024
    figures.attack("hostile node: endless stdout of a command", ok)
    assert outcome["truncated"] is True, outcome["stderr"]
    assert len(outcome["stdout"]) <= 16 << 20
    assert took < 20
    assert grown_kib < 400 * 1024


def test_hostile_probe_output_is_stored_capped_and_inert(
    fleet_factory, figures: Figures, tmp_path: Path
) -> None:
    """A node answering every exec with crafted facts: metacharacters, ${...}, huge values."""
    fleet: Fleet = fleet_factory(1)
    marker = Path(f"/tmp/edgectlpwned-facts-{os.getpid()}")
    escape = "\x1b]0;owned\x07\x1b[2J"
    lines = [
        "edgectl_probe=1",
        f"hostname=$(mkdir {marker})`mkdir {marker}`;mkdir {marker}" + "h" * 100_000,
        "kernel=${HOME}${IFS}$((1+1))" + escape,
        "arch=' \" \\ | & > < *",
        "os=" + escape + "[/bold][link=file:///etc/passwd]x[/link]",
        "cores=1e308",
        "loadavg=nan inf -1",
        "mem_total_kb=99999999999999999999999",
        "disk_kb=1 2 3 4",
        *(f"tesseract_lang=l{i}" for i in range(5_000)),
        "temp_milli_c=${PATH}",
        "edgectl_probe_end=1",
    ]
    answer = fleet.directory / "hostile-probe.txt"
    answer.write_text("\n".join(lines) + "\n")
    answer.chmod(0o644)
    sshd = fleet.sshd[0]
    sshd.config.write_text(sshd.config.read_text() + f"ForceCommand cat {answer}\n")
    fleet.restart(0)
    home = fleet_home(tmp_path / "home", fleet)
    probed = run_cli(home, "probe", "n01", "--json", "--timeout", "10")
    status = run_cli(home, "status", tty=True)
    plain_status = run_cli(home, "status")
    facts_size = (home / "facts.json").stat().st_size
    # Megabytes of it: the whole report is refused with a reason, the stored facts kept.
    answer.write_text("\n".join([*lines[:1], "hostname=" + "h" * 4000000, *lines[2:]]) + "\n")
    huge = run_cli(home, "probe", "n01", "--json", "--timeout", "10")
    [huge_record] = [r for r in huge.json if r["name"] == "n01"]
    [record] = [r for r in probed.json if r["name"] == "n01"]
    values = [v for v in (record.get("facts") or {}).values() if isinstance(v, str)]
    printed = status.stdout + status.stderr + plain_status.stdout + plain_status.stderr
    checks = {
        "hostile facts parsed": record["reachable"] is True and bool(values),
        "facts values capped": all(len(v) <= 200 for v in values),
        "languages capped": len(record["facts"]["tesseract_langs"]) <= 300,
        "facts file bounded": facts_size < 200_000,
        "no escape reaches the terminal": "\x1b]0" not in printed and "\x07" not in printed,
        "status drawn": status.exit_status == 0 and plain_status.exit_status == 0,
        "no canary ran": not marker.exists(),
        "megabytes of facts refused": huge_record["reachable"] is False
        and huge_record["reason"] == "error"
        and any(w in (huge_record["error"] or "") for w in ("probe failed", "bytes")),
    }
    for name, ok in checks.items():
        figures.attack(f"hostile facts: {name}", ok)
    assert checks == dict.fromkeys(checks, True), (checks, facts_size, record, huge_record)


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ("S\tt1\t0\nN\tt1\n", "the node reports success but left no manifest"),
        ("S\tt1\t3\nN\tt1\n", None),  # a failure needs no manifest
        (f"S\tt1\t0\nM\tt1\t{'0' * 64}\t5\tmanifest.json\n", "reserved for edgectl"),
        (f"S\tt1\t0\nM\tt1\t{'0' * 64}\t5\ta\x01b\n", "refused output name"),
        (f"S\tt1\t0\nM\tt1\t{'0' * 64}\t5\tok.txt\n", None),
    ],
)
def test_poll_reports_of_a_hostile_node_are_judged_without_a_server(
    output: str, error: str | None
) -> None:
    from edgectl.jobs.remote import parse_poll

    report = parse_poll(output, ["t1"], max_file=1 << 20, max_total=1 << 20)["t1"]
    if error is None:
        assert report.error is None
    else:
        assert report.error is not None and error in report.error


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;owned\x07plain", "\\x1b]0;owned\\x07plain"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("\x9bC1 csi", "\\x9bC1 csi"),
        ("[/bold] stays text", "[/bold] stays text"),
    ],
)
def test_text_from_nodes_is_printed_with_control_characters_escaped(text: str, shown: str) -> None:
    from edgectl.cli.render import plain

    assert plain(text) == shown
