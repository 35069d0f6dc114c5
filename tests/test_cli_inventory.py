"""`edgectl inventory` through the CLI, in-process: exit codes, stdout, stderr, JSON."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgectl.status import ExitStatus
from tests.cli import run_cli

NODE_KEYS = {"name", "host", "port", "user", "key", "groups", "labels", "workdir", "connection"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _add(home: Path, name: str, *extra: str) -> None:
    result = run_cli(home, "inventory", "add", name, *extra)
    assert result.exit_status == 0, result.stderr


def test_fresh_home_lists_the_local_node(home: Path) -> None:
    result = run_cli(home, "inventory", "list", "--json")
    assert result.exit_status == 0
    assert result.stderr == ""
    [local] = result.json
    assert set(local) == NODE_KEYS
    assert (local["name"], local["connection"]) == ("local", "local")


def test_add_show_list_json_shapes(home: Path) -> None:
    _add(
        home,
        "cam-01",
        "--host",
        "192.0.2.11",
        "--port",
        "2222",
        "--user",
        "edge",
        "--key",
        "~/.ssh/edge",
        "-g",
        "cameras",
        "--group",
        "shanghai",
        "-l",
        "arch=arm64",
        "--label",
        "site=shanghai",
        "--workdir",
        "/srv/edge",
    )
    shown = run_cli(home, "inventory", "show", "cam-01", "--json").json
    assert shown == {
        "name": "cam-01",
        "host": "192.0.2.11",
        "port": 2222,
        "user": "edge",
        "key": "~/.ssh/edge",
        "groups": ["cameras", "shanghai"],
        "labels": {"arch": "arm64", "site": "shanghai"},
        "workdir": "/srv/edge",
        "connection": "ssh",
    }
    listed = run_cli(home, "inventory", "list", "@cameras", "--json").json
    assert listed == [shown]


def test_plain_output_in_a_pipe_is_a_table_without_colour(home: Path) -> None:
    _add(home, "gw-01", "--host", "192.0.2.1", "-l", "role=gateway")
    result = run_cli(home, "inventory", "list")
    assert "\x1b[" not in result.stdout
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "HOST", "PORT", "USER", "GROUPS", "LABELS"]
    assert rows[1].split() == ["gw-01", "192.0.2.1", "22", "role=gateway"]


def test_terminal_output_is_drawn_by_rich(home: Path) -> None:
    result = run_cli(home, "inventory", "list", tty=True)
    assert result.exit_status == 0
    assert "local" in result.stdout


def test_duplicate_add_conflicts_and_changes_nothing(home: Path) -> None:
    _add(home, "a", "--host", "192.0.2.1")
    before = run_cli(home, "inventory", "list", "--json").json
    result = run_cli(home, "inventory", "add", "a", "--host", "192.0.2.99")
    assert result.exit_status == ExitStatus.CONFLICT
    assert "already" in result.stderr
    assert run_cli(home, "inventory", "list", "--json").json == before


@pytest.mark.parametrize(
    "args",
    [
        ["add", "bad;name", "--host", "192.0.2.1"],
        ["add", "--", "-x", "--host", "192.0.2.1"],
        ["add", "ok", "--host", "$(touch /tmp/canary)"],
        ["add", "ok", "--host", "192.0.2.1", "--label", "novalue"],
        ["add", "ok", "--host", "192.0.2.1", "--port", "70000"],
        ["add", "ok", "--host", "192.0.2.1", "--user", "-oProxyCommand=x"],
        ["set", "local", "port=abc"],
        ["set", "local", "name=x"],
        ["set", "local", "noequals"],
        ["label", "local"],
        ["list", "a,,b"],
    ],
)
def test_bad_input_is_one_line_usage_error_and_loses_nothing(home: Path, args: list[str]) -> None:
    before = run_cli(home, "inventory", "list", "--json").json
    result = run_cli(home, "inventory", *args)
    assert result.exit_status == ExitStatus.USAGE, result.stderr
    assert result.stderr.startswith("edgectl: error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    assert run_cli(home, "inventory", "list", "--json").json == before


def test_selector_matching_nothing_is_an_error_unless_allowed(home: Path) -> None:
    result = run_cli(home, "inventory", "list", "cam-*")
    assert result.exit_status == ExitStatus.NOT_FOUND
    assert "matches no node" in result.stderr
    allowed = run_cli(home, "inventory", "list", "cam-*", "--allow-empty", "--json")
    assert allowed.exit_status == 0 and allowed.json == []


def test_set_label_group_rm(home: Path) -> None:
    _add(home, "a", "--host", "192.0.2.1", "-g", "g1")
    _add(home, "b", "--host", "192.0.2.2", "-g", "g1")
    assert (
        run_cli(
            home, "inventory", "set", "a", "host=edge-a.example", "port=2200", "user=root"
        ).exit_status
        == 0
    )
    assert run_cli(home, "inventory", "label", "@g1", "site=x", "tier=1").exit_status == 0
    assert run_cli(home, "inventory", "label", "b", "--remove", "tier").exit_status == 0
    assert run_cli(home, "inventory", "group", "a", "g2", "g3").exit_status == 0
    assert run_cli(home, "inventory", "group", "a", "g1", "--remove").exit_status == 0
    nodes = {n["name"]: n for n in run_cli(home, "inventory", "list", "--json").json}
    assert (nodes["a"]["host"], nodes["a"]["port"], nodes["a"]["user"]) == (
        "edge-a.example",
        2200,
        "root",
    )
    assert nodes["a"]["labels"] == {"site": "x", "tier": "1"}
    assert nodes["b"]["labels"] == {"site": "x"}
    assert nodes["a"]["groups"] == ["g2", "g3"]
    assert run_cli(home, "inventory", "groups", "--json").json == {
        "g1": ["b"],
        "g2": ["a"],
        "g3": ["a"],
    }
    assert run_cli(home, "inventory", "set", "a", "user=").exit_status == 0
    assert run_cli(home, "inventory", "show", "a", "--json").json["user"] is None

    missing = run_cli(home, "inventory", "rm", "a", "nope")
    assert missing.exit_status == ExitStatus.NOT_FOUND
    assert len(run_cli(home, "inventory", "list", "--json").json) == 3  # all or nothing
    assert run_cli(home, "inventory", "rm", "a", "b").exit_status == 0
    assert [n["name"] for n in run_cli(home, "inventory", "list", "--json").json] == ["local"]


def test_unknown_command_and_option_are_usage_errors(home: Path) -> None:
    assert run_cli(home, "inventory", "frobnicate").exit_status == ExitStatus.USAGE
    result = run_cli(home, "inventory", "list", "--jsn")
    assert result.exit_status == ExitStatus.USAGE
    assert "--jsn" in result.stderr


def test_version_and_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgectl", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("edgectl ")


def test_home_from_environment(tmp_path: Path) -> None:
    env_home = tmp_path / "from-env"
    proc = subprocess.run(
        [sys.executable, "-m", "edgectl", "inventory", "add", "a", "--host", "192.0.2.1"],
        env={"EDGECTL_HOME": str(env_home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (env_home / "inventory.json").exists()
