"""Shipped completion scripts are current, and bash really completes from the inventory."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgectl.cli.completion import SHELLS, completion_script
from tests.cli import run_cli
from tests.fleet import cannot_run_here

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("shell", SHELLS)
def test_shipped_completion_script_is_current(shell: str) -> None:
    shipped = (ROOT / "completions" / f"edgectl.{shell}").read_text()
    assert shipped == completion_script(shell), (
        f"completions/edgectl.{shell} is stale: regenerate with "
        f"`edgectl completion {shell} > completions/edgectl.{shell}`"
    )


def _bash_complete(home: Path, words: list[str]) -> list[str]:
    edgectl = Path(sys.executable).with_name("edgectl")
    assert edgectl.exists(), "edgectl must be installed in the test environment"
    script = (
        f"source {ROOT / 'completions' / 'edgectl.bash'}\n"
        f"COMP_WORDS=({' '.join(map(shlex.quote, words))}); COMP_CWORD={len(words) - 1}\n"
        "_edgectl_completion edgectl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {
        **os.environ,
        "EDGECTL_HOME": str(home),
        "PATH": f"{edgectl.parent}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completes_commands_nodes_and_groups(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        cannot_run_here("bash is not installed")
    for name, group in [("cam-01", "cameras"), ("cam-02", "cameras"), ("gw-01", "gateways")]:
        assert (
            run_cli(
                tmp_path, "inventory", "add", name, "--host", "192.0.2.1", "-g", group
            ).exit_status
            == 0
        )
    assert _bash_complete(tmp_path, ["edgectl", "inv"]) == ["inventory"]
    assert _bash_complete(tmp_path, ["edgectl", "inventory", "show", "cam"]) == ["cam-01", "cam-02"]
    assert _bash_complete(tmp_path, ["edgectl", "inventory", "list", "@g"]) == ["@gateways"]
    assert _bash_complete(tmp_path, ["edgectl", "inventory", "list", "cam-01,!g"]) == [
        "cam-01,!gw-01"
    ]
    assert _bash_complete(tmp_path, ["edgectl", "inventory", "list", "cam-01,&@"]) == [
        "cam-01,&@cameras",
        "cam-01,&@gateways",
    ]
