"""What the executor does on a node, as argv lists and parsers of their output.

Each operation is one exec: upload-and-start (a tar stream on stdin), a poll of every
task of a node, a download of a task's outputs, a cleanup, a kill. Each attempt of a task
has its own directory on the node, named by the task id and the attempt's number (ours,
checked by RUN_NAME); everything else reaches the node as a quoted argument.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

# An attempt's directory on its node: the task id and the attempt's number.
RUN_NAME = re.compile(r"t[0-9A-Za-z-]{1,80}(\.[0-9]{1,6}-[0-9a-f]{4})?")
OUTPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# Files edgectl itself writes in results/<job-id>/: no task output may take their names.
RESERVED_NAMES = frozenset({"manifest.json", "analytics.json"})
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_OUTPUTS = 10_000
TASKS_DIR = "tasks"
# Runners start niced, so that a node's own work keeps its cores: below it, ours share what
# is left. A task its job would end with (the scheduler's `favoured`) is niced less, to run
# ahead of the node's other tasks of ours.
NICE = 19
NICE_FAVOURED = 10

# Expands a leading ~ of the workdir ($1) the way a login shell would, into $wd.
_WORKDIR = 'wd=$1; shift; case $wd in "~") wd=$HOME ;; "~/"*) wd=$HOME/${wd#"~/"} ;; esac; '

# An attempt runs in its own directory, tasks/<task-id>.<number>-<random>, claimed once by
# an atomic symlink `.claim`: by its start (`started`) just before the runner is launched,
# or by whoever gives the attempt up first (`gone <time>`: a kill, a cleanup, or a poll
# after a restart). A given-up attempt can never start: a start exec orphaned by a killed
# controller finds the claim taken and leaves. Its directory stays as a marker holding
# only the claim, until a later cleanup finds it older than the age it is given.
_GIVE_UP = (
    'give_up() { mkdir -p "$wd/tasks" 2>/dev/null; mkdir "$1" 2>/dev/null; '
    + 'ln -s "gone $(date +%s)" "$1/.claim" 2>/dev/null; '
    + 'case $(readlink "$1/.claim" 2>/dev/null) in "gone "*) return 0 ;; esac; return 1; }; '
)

# Exit statuses of a start that left nothing running: given up (89), bad input (90), no
# directory or no unpacking (91); it removed what it made.
START_CLEANED = frozenset({89, 90, 91})

# A finished attempt ($1, in directory $2): its status, each manifest line (NULs made
# visible) or N for no manifest, and each input it skipped because edgectl took it back.
_REPORT = (
    'report() { printf \'S\\t%s\\t%s\\n\' "$1" "$(head -c 20 "$2/status")"; '
    + "if [ -f \"$2/manifest\" ]; then head -n 10001 \"$2/manifest\" | tr '\\000' '\\001' | "
    + 'while IFS= read -r line; do printf \'M\\t%s\\t%s\\n\' "$1" "$line"; done; '
    + "else printf 'N\\t%s\\n' \"$1\"; fi; "
    + 'if [ -f "$2/skipped" ]; then head -n 10001 "$2/skipped" | '
    + 'while IFS= read -r j; do printf \'K\\t%s\\t%s\\n\' "$1" "$j"; done; fi; }; '
)

START = (
    _WORKDIR
    + _REPORT
    + 'd=$wd/tasks/$1; mkdir -p "$wd/tasks" || exit 91; '
    + 'if ! mkdir "$d" 2>/dev/null; then [ -d "$d" ] || { echo "cannot make $d" >&2; exit 91; }; '
    + "echo 'the attempt was given up before it started' >&2; exit 89; fi; "
    + 'cd "$d" || exit 91; '
    # Failing before the claim: the start claims its own attempt and removes what it made.
    + 'fail() { if ln -s started .claim 2>/dev/null; then cd / && rm -rf -- "$d"; fi; exit "$1"; }; '
    + "tar xf - || fail 91; "
    + "if [ -s inputs.sha256 ] && ! sha256sum -c inputs.sha256 >/dev/null 2>&1; then echo 'input checksum mismatch' >&2; fail 90; fi; "
    + "if ! ln -s started .claim 2>/dev/null; then "
    + 'for f in * .[!.]*; do [ "$f" = .claim ] || rm -rf -- "$f"; done; '
    + "echo 'the attempt was given up before it started' >&2; exit 89; fi; "
    # The runner is its own session and process group (setsid), so it survives this exec and
    # `job cancel` can kill the group; its pid is written before this exec returns. It runs
    # at niceness $3 where nice(1) exists (setsid and nice exec in place: the pid is sh's),
    # and first waits for one of $4 core tokens of the node (0 or none: it computes at once),
    # behind any waiting task of a job of higher priority than $5.
    + "if command -v nice >/dev/null 2>&1; then "
    + 'setsid nice -n "$3" sh ./runner.sh "${4:-0}" "${5:-0}" </dev/null >/dev/null 2>&1 & '
    + 'else setsid sh ./runner.sh "${4:-0}" "${5:-0}" </dev/null >/dev/null 2>&1 & fi; '
    + "p=$!; echo $p > pid; echo pid=$p; "
    # A short task is often done within a moment: wait up to $2 steps of 20 ms and
    # report it here, saving a poll round trip (no fractional sleep: no wait).
    + 'i=0; while [ ! -f status ] && [ "$i" -lt "$2" ] && sleep 0.02 2>/dev/null; do i=$((i+1)); done; '
    # How many steps it waited: the runner was launched about that long before the reply.
    + 'echo "waited=$i"; '
    + 'if [ -f status ]; then report "$1" "$d"; fi'
)

START_STEP_S = 0.02  # one wait step of START (`sleep 0.02`)


def start_number(output: str, name: str) -> int | None:
    """A number START prints as `name=N` (`pid`, `waited`), or None when it did not say."""
    for line in output.splitlines():
        if line.startswith(f"{name}="):
            value = line[len(name) + 1 :].strip()
            return int(value) if value.isdigit() and len(value) < 10 else None
    return None


POLL = (
    _WORKDIR
    + _GIVE_UP
    + _REPORT
    + 'for t in "$@"; do d=$wd/tasks/$t; '
    + 'if [ ! -f "$d/status" ] && [ -f "$d/pid" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null; '
    # Running: with how many inputs it has done so far (a byte per input in `progress`),
    # and whether it computes (1) or still waits for a core token (0: no `gated` yet).
    + 'then n=0; [ -f "$d/progress" ] && n=$(wc -c < "$d/progress"); '
    + 'g=0; [ -f "$d/gated" ] && g=1; '
    + "printf 'R\\t%s\\t%s\\t%s\\n' \"$t\" $n $g; "
    + 'elif [ -f "$d/status" ]; then report "$t" "$d"; '
    + 'elif [ -f "$d/pid" ]; then printf \'L\\t%s\\n\' "$t"; '
    # No runner: given up here unless its start holds the claim (then its pid comes next).
    + 'elif give_up "$d"; then printf \'G\\t%s\\n\' "$t"; '
    + "else printf 'W\\t%s\\n' \"$t\"; fi; done"
)

# Takes back inputs of a running attempt ($1) that its runner has not started: the runner
# claims input j (mkdir claims/j) before starting it, and skips those claimed here first.
# Prints the indices won. A finished attempt gives nothing back.
TAKEBACK = (
    _WORKDIR
    + 'd=$wd/tasks/$1; shift; cd "$d" 2>/dev/null || exit 0; [ -f status ] && exit 0; '
    + 'mkdir -p claims; for j in "$@"; do case $j in ""|*[!0-9]*) continue ;; esac; '
    + 'mkdir "claims/$j" 2>/dev/null && printf \'%s\\n\' "$j"; done; :'
)

FETCH = (
    _WORKDIR
    + 'cd "$wd/tasks/$1/out" || exit 92; shift; '
    + 'for n in "$@"; do if [ -h "$n" ] || [ ! -f "$n" ]; then echo "not a regular file: $n" >&2; exit 93; fi; done; '
    + 'cat -- "$@"'
)

# Waits (2 s at most) for the pid its start writes just after claiming an attempt.
_PID = 'wait_pid() { i=0; while [ ! -f "$1/pid" ] && [ -d "$1" ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; }; '

# $1: the age in seconds after which given-up markers go; then the attempts to remove.
CLEANUP = (
    _WORKDIR
    + _GIVE_UP
    + _PID
    + 'age=$1; shift; for t in "$@"; do d=$wd/tasks/$t; [ -d "$d" ] || continue; '
    # Not started: it never will (a marker stays). Started and still running (a copy that
    # lost, work given up): killed first, so the order in which a kill and a cleanup arrive
    # cannot matter (a cleanup that took the pid file would leave the kill nothing).
    + 'give_up "$d" && continue; wait_pid "$d"; '
    + 'if [ ! -f "$d/status" ] && [ -f "$d/pid" ]; then p=$(cat "$d/pid"); '
    + 'case $p in ""|*[!0-9]*) ;; *) kill -KILL "-$p" 2>/dev/null ;; esac; fi; '
    + 'rm -rf -- "$d"; done; '
    + 'now=$(date +%s); for c in "$wd"/tasks/*/.claim; do '
    + 'case $(readlink "$c" 2>/dev/null) in "gone "*) at=$(readlink "$c"); at=${at#gone }; '
    + 'case $at in ""|*[!0-9]*) ;; *) [ $((now - at)) -gt "$age" ] && rm -rf -- "${c%/.claim}" ;; esac ;; esac; done; :'
)

KILL = (
    _WORKDIR
    + _GIVE_UP
    + _PID
    + 'd=$wd/tasks/$1; give_up "$d" && exit 0; wait_pid "$d"; '
    + '[ -f "$d/pid" ] && p=$(cat "$d/pid") || p=; '
    + 'case $p in ""|*[!0-9]*) rm -rf -- "$d"; exit 0 ;; esac; '
    + 'kill -TERM "-$p" 2>/dev/null; i=0; '
    + 'while kill -0 "-$p" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; '
    # Then the task directory goes: a killed task leaves nothing behind on the node.
    + 'kill -KILL "-$p" 2>/dev/null; rm -rf -- "$d"; exit 0'
)

# Files matching each glob (the user's pattern, expanded by the node's shell without word
# splitting), as `size<TAB>absolute path`; relative patterns start in the home directory.
LIST = (
    _WORKDIR
    + 'cd "$HOME" || exit 1; IFS=; for g in "$@"; do for f in $g; do '
    + 'if [ -f "$f" ] && [ ! -h "$f" ]; then case $f in /*) p=$f ;; *) p=$HOME/$f ;; esac; '
    + 'printf \'%s\\t%s\\n\' "$(wc -c < "$f" | tr -d \' \')" "$p"; fi; done; done'
)

# The logs are read only when they are regular files: a node that replaced one with a
# symlink to /dev/zero or a FIFO would otherwise hold the read until its timeout.
_TAIL = 'tail_log() { if [ -f "$2" ] && [ ! -h "$2" ]; then tail -c "$1" "$2" 2>/dev/null; fi; }; '

ERROR_TAIL = _WORKDIR + _TAIL + 'tail_log 400 "$wd/tasks/$1/stderr.log"'

LOGS = (
    _WORKDIR
    + _TAIL
    + 'd=$wd/tasks/$1; tail_log 65536 "$d/stdout.log"; echo; echo "--- stderr"; tail_log 65536 "$d/stderr.log"'
)


def sh(script: str, workdir: str, *args: str) -> list[str]:
    """argv running a fixed script with the workdir and arguments as positional parameters."""
    return ["sh", "-c", script, "edgectl", workdir, *args]


def check_run_name(name: str) -> str:
    """An attempt's directory name as edgectl makes them (task id and attempt number)."""
    if not RUN_NAME.fullmatch(name):
        raise ValueError(f"bad task attempt name {name!r}")
    return name


@cache
def runner_file(name: str) -> bytes:
    """A node-side runner shipped in edgectl.jobs.runners, read once per process."""
    return resources.files("edgectl.jobs.runners").joinpath(name).read_bytes()


def runner_script() -> bytes:
    """The node-side task runner (shipped inside the package)."""
    return runner_file("task.sh")


def sha256_file(path: Path) -> str:
    """The sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def pack_task(
    files: dict[str, bytes | Path], run_sh: str, extra_runners: dict[str, bytes] | None = None
) -> bytes:
    """The tar stream of a task: inputs under in/, run.sh, the runner, and inputs.sha256."""
    buffer = io.BytesIO()
    sums: list[str] = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for name, source in files.items():
            data = source.read_bytes() if isinstance(source, Path) else source
            add(f"in/{name}", data)
            sums.append(f"{hashlib.sha256(data).hexdigest()}  in/{name}\n")
        add("run.sh", run_sh.encode(), 0o755)
        add("runner.sh", runner_script(), 0o755)
        for name, data in (extra_runners or {}).items():
            add(name, data, 0o755)
        add("inputs.sha256", "".join(sums).encode())
    return buffer.getvalue()


@dataclass(frozen=True)
class OutputEntry:
    """One line of a task's manifest, checked."""

    name: str
    size: int
    sha256: str


@dataclass
class PollReport:
    """What a poll said of one attempt: running, finished (status + manifest), lost, given up
    (it had not started and now never will) or starting (its start holds it, no pid yet)."""

    task_id: str  # the attempt's name, as asked
    state: str  # "running" | "finished" | "lost" | "given_up" | "starting"
    exit_status: int | None = None
    manifest: list[OutputEntry] | None = None
    error: str | None = None
    progress: int = 0  # inputs done so far, while running
    computing: bool = True  # while running: past the node's core gate (older runners: always)
    skipped: set[int] = field(default_factory=set)  # inputs taken back before they started


class ManifestError(ValueError):
    """A manifest line that edgectl refuses (bad name, size, checksum, too many files)."""


def parse_manifest_line(line: str, max_file: int) -> OutputEntry:
    """Check one `sha256<TAB>size<TAB>name` line."""
    parts = line.split("\t")
    if len(parts) != 3:
        raise ManifestError("malformed manifest line")
    digest, size_text, name = parts
    if not OUTPUT_NAME.fullmatch(name) or name in (".", ".."):
        raise ManifestError(f"refused output name {name[:60]!r} (plain names only)")
    if name in RESERVED_NAMES:
        raise ManifestError(f"refused output name {name!r} (reserved for edgectl's own files)")
    if not SHA256.fullmatch(digest):
        raise ManifestError(f"bad checksum for {name!r}")
    if not size_text.isdigit():
        raise ManifestError(f"bad size for {name!r}")
    size = int(size_text)
    if size > max_file:
        raise ManifestError(f"output {name!r} is {size} bytes, over the {max_file}-byte cap")
    return OutputEntry(name, size, digest)


def parse_poll(
    output: str, asked: Sequence[str], max_file: int, max_total: int
) -> dict[str, PollReport]:
    """Reports for the asked task ids; anything else in the output is ignored."""
    wanted = set(asked)
    reports: dict[str, PollReport] = {}
    for line in output.splitlines():
        kind, _, rest = line.partition("\t")
        task_id, _, value = rest.partition("\t")
        if task_id not in wanted:
            continue
        if kind == "R":
            done, _, gated = value.strip().partition("\t")
            progress = int(done) if done.isdigit() and len(done) < 10 else 0
            reports[task_id] = PollReport(
                task_id, "running", progress=progress, computing=gated.strip() != "0"
            )
        elif kind == "L":
            reports[task_id] = PollReport(
                task_id, "lost", error="the runner is gone and left no status"
            )
        elif kind == "G":
            reports[task_id] = PollReport(task_id, "given_up", error="the runner never started")
        elif kind == "W":
            reports[task_id] = PollReport(task_id, "starting")
        elif kind == "S":
            status = value.strip()
            code = int(status) if status.isdigit() and len(status) < 4 else None
            reports[task_id] = PollReport(task_id, "finished", code, manifest=[])
            if code is None:
                reports[task_id].error = f"unreadable status {status[:20]!r}"
        elif kind == "N":
            report = reports.get(task_id)
            if report is not None and report.exit_status == 0 and not report.error:
                # The runner writes the manifest before the status: a success without one
                # is a tampered or broken task directory, not a task without outputs.
                report.error = "the node reports success but left no manifest"
        elif kind == "K":
            report = reports.get(task_id)
            index = value.strip()
            if report is not None and index.isdigit() and len(index) < 7:
                report.skipped.add(int(index))
        elif kind == "M":
            report = reports.get(task_id)
            if report is None or report.manifest is None or report.error:
                continue
            try:
                entry = parse_manifest_line(value, max_file)
            except ManifestError as exc:
                report.error = str(exc)
                continue
            if any(e.name == entry.name for e in report.manifest):
                report.error = f"output {entry.name!r} listed twice"
            elif len(report.manifest) >= MAX_OUTPUTS:
                report.error = f"more than {MAX_OUTPUTS} outputs"
            elif sum(e.size for e in report.manifest) + entry.size > max_total:
                report.error = f"outputs total over the {max_total}-byte cap"
            else:
                report.manifest.append(entry)
    for task_id in asked:
        reports.setdefault(task_id, PollReport(task_id, "lost", error="no report from the node"))
    return reports
