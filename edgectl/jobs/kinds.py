"""Kinds of work: what a task of each kind uploads, runs on the node, and brings back."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.errors import UsageError
from edgectl.jobs.remote import runner_file

if TYPE_CHECKING:
    from edgectl.jobs.model import Job

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def input_names(paths: Sequence[str]) -> list[str]:
    """The names inputs get in a task's in/ directory: base names made safe, kept unique.

    A name taken twice (the same file name in two directories) gets its index as a prefix.
    """
    bases = [(_SAFE.sub("_", Path(p).name).lstrip(".-") or "input")[:100] for p in paths]
    seen: dict[str, int] = {}
    for base in bases:
        seen[base] = seen.get(base, 0) + 1
    return [base if seen[base] == 1 else f"{i:06d}-{base}" for i, base in enumerate(bases)]


def input_path(item: dict[str, Any], files: dict[str, Path | bytes]) -> str:
    """Where an input is on the node: in/NAME once uploaded, or where it already lives."""
    if item.get("remote"):
        return str(item["remote"])
    files[item["name"]] = Path(item["path"])
    return f"in/{item['name']}"


@dataclass
class TaskPayload:
    """What one task sends to its node: files for in/, the run.sh script, extra runners."""

    files: dict[str, Path | bytes]
    run_sh: str
    runners: dict[str, bytes] = field(default_factory=dict)


def python_runner_payload(
    files: dict[str, Path | bytes], runner: str, task: dict[str, Any], env: str = ""
) -> TaskPayload:
    """A task run by `<runner>_runner.py`, shipped from edgectl.jobs.runners, reading
    `<runner>_task.json`, under the python3 of the node's `<workdir>/venv` when there is one
    (the playbooks make it), else the node's python3. `env` holds extra `export` lines."""
    script = f"{runner}_runner.py"
    run_sh = (
        "set -u\nmkdir -p out\n"
        + env
        + "py=python3\n"
        + "if [ -x ../../venv/bin/python3 ]; then py=../../venv/bin/python3; fi\n"
        + f'exec "$py" ./{script} {runner}_task.json\n'
    )
    source = runner_file(script)
    return TaskPayload(
        files=files,
        run_sh=run_sh,
        runners={
            script: source,
            f"{runner}_task.json": json.dumps(task, ensure_ascii=False).encode(),
        },
    )


class Kind:
    """A kind of job: checks its options and turns a chunk of inputs into a task payload."""

    name = ""
    requires_langs: Sequence[str] = ()
    mem_per_task = 0  # bytes of free memory a task needs on its node

    def work(self, item: dict[str, Any]) -> float:
        """The expected work of one input, in the unit node rates are learned in."""
        # A fixed cost per input (start-up, a round of the shell) plus one per megabyte.
        return 1.0 + int(item.get("size") or 0) / 1e6

    def check(self, params: dict[str, Any]) -> None:
        """Refuse bad options before anything is stored."""

    def payload(self, params: dict[str, Any], inputs: Sequence[dict[str, Any]]) -> TaskPayload:
        """The files and script of a task over these inputs."""
        raise NotImplementedError

    def eligible(self, params: dict[str, Any], facts: dict[str, Any]) -> str | None:
        """Why a node with these facts cannot run this job's tasks, or None when it can."""
        return None

    def finish(self, job: Job, directory: Path) -> None:
        """After a run of the job: derive whole-job results in its results directory."""

    def report(self, directory: Path, files: Sequence[dict[str, Any]]) -> KindReport | None:
        """What `job results` shows beyond the file list (None: the file list only)."""
        return None


@dataclass
class KindReport:
    """A kind's view of a job's results: JSON under `key`, and a table of raw values."""

    key: str
    data: Any
    headers: list[str]
    rows: list[list[Any]]
    problems: int = 0  # inputs or pages that produced no result


class ScriptKind(Kind):
    """`--run 'CMD {input}'` per input; files the command writes under out/ come back.

    In the command, {input} is the input's path on the node, {name} its file name and
    {stem} the name without extension, each shell-quoted; the command runs in the task
    directory with `out/` beside it. The command itself is the user's own shell text.
    """

    name = "script"

    def check(self, params: dict[str, Any]) -> None:
        """A command is needed; extra files must exist."""
        if not params.get("run"):
            raise UsageError("a script job needs --run 'COMMAND {input}'")
        for extra in params.get("files", []):
            if not Path(extra).is_file():
                raise UsageError(f"--file {extra}: not a readable file")

    def payload(self, params: dict[str, Any], inputs: Sequence[dict[str, Any]]) -> TaskPayload:
        """run.sh: the command once per input, stopping at the first failure."""
        files: dict[str, Path | bytes] = {}
        lines = ["set -u", "mkdir -p out", 'export EDGECTL_TASK_DIR="$PWD"']
        for extra in params.get("files", []):
            files[Path(extra).name] = Path(extra)
        for index, item in enumerate(inputs):
            name = item["name"]
            stem = name.rsplit(".", 1)[0] if "." in name else name
            command = (
                params["run"]
                .replace("{input}", shlex.quote(input_path(item, files)))
                .replace("{name}", shlex.quote(name))
                .replace("{stem}", shlex.quote(stem))
            )
            # Claimed before it starts: edgectl may have taken it back (see remote.TAKEBACK).
            lines.append(f"if mkdir claims/{index} 2>/dev/null; then ( {command}\n) || exit $?")
            lines.append("printf . >> progress")  # one byte per input done: see remote.POLL
            lines.append(f"else echo {index} >> skipped; fi")
        return TaskPayload(files=files, run_sh="\n".join(lines) + "\n")


KINDS: dict[str, Kind] = {"script": ScriptKind()}


def _load_kinds() -> None:
    """Register the OCR and analytics kinds (their modules import this one: loaded on use)."""
    if "ocr" not in KINDS:
        from edgectl.jobs.kind_analytics import AnalyticsKind
        from edgectl.jobs.kind_ocr import OcrKind

        KINDS.update(ocr=OcrKind(), analytics=AnalyticsKind())


def get_kind(name: str) -> Kind:
    """A kind by name, or a usage error naming the known ones."""
    _load_kinds()
    try:
        return KINDS[name]
    except KeyError:
        raise UsageError(
            f"unknown job kind {name!r}: use one of {', '.join(sorted(KINDS))}"
        ) from None
