"""Start-up stays light: slow libraries are imported only by the commands that use them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ["asyncssh", "asyncio", "fabric", "paramiko", "PIL", "pytesseract", "rich", "psutil"]


def _modules_after(code: str, home: Path) -> set[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"EDGECTL_HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["inventory", "list", "--json"], ["inventory", "list"]],
)
def test_cli_start_up_imports_no_heavy_library(tmp_path: Path, argv: list[str]) -> None:
    code = (
        "import io\nfrom edgectl.cli.main import main\nfrom edgectl.cli.context import Environment\n"
        f"main({argv!r}, Environment(stdout=io.StringIO(), stdout_isatty=False))"
    )
    loaded = _modules_after(code, tmp_path)
    assert "edgectl.cli.main" in loaded
    for name in HEAVY:
        assert name not in loaded, f"{name} imported by edgectl {' '.join(argv)}"


def test_importing_the_api_loads_no_heavy_library(tmp_path: Path) -> None:
    loaded = _modules_after("import edgectl\nedgectl.Fleet().nodes()", tmp_path)
    for name in [*HEAVY, "typer"]:
        assert name not in loaded
