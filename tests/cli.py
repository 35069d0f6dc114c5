"""Run the CLI in-process, the way a test reads it: exit status, stdout, stderr, JSON."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.cli.context import Environment
from edgectl.cli.main import main


@dataclass
class CliResult:
    """One invocation's outcome."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(home: Path | str, *args: str, tty: bool = False) -> CliResult:
    """`edgectl --home HOME ARGS...` in this process."""
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stdout_isatty=tty, stderr_isatty=tty)
    status = main(["--home", str(home), *args], env)
    return CliResult(int(status), out.getvalue(), err.getvalue())


def edgectl_argv(home: Path | str, *args: str) -> list[str]:
    """The argv of `edgectl --home HOME ARGS...` as a child process of this Python."""
    return [sys.executable, "-m", "edgectl", "--home", str(home), *args]
