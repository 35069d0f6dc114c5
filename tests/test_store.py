"""The store survives concurrent writers, killed writers and damaged files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgectl import Fleet, StoreError
from edgectl.store import Store
from tests.cli import run_cli

WRITER = textwrap.dedent(
    """
    import sys
    from edgectl import Fleet
    fleet = Fleet(sys.argv[1])
    prefix = sys.argv[2]
    for i in range(int(sys.argv[3])):
        fleet.add_node(f"{prefix}-{i:03d}", host=f"10.{len(prefix)}.0.{i % 250 + 1}", groups=[prefix])
    """
)


def test_eight_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{i}", "25"])
        for i in range(8)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    names = Fleet(tmp_path).inventory.names()
    assert len([n for n in names if n != "local"]) == 200
    assert len(set(names)) == len(names)


LOOP_WRITER = textwrap.dedent(
    """
    import sys
    from edgectl import Fleet
    fleet = Fleet(sys.argv[1])
    i = 0
    while True:
        fleet.add_node(f"n{i:05d}", host="10.0.0.1", labels={"pad": "x" * 200})
        if i % 3 == 2:
            fleet.remove_nodes([f"n{i - 1:05d}"])
        i += 1
    """
)


def test_writer_killed_at_random_instants_never_leaves_an_unreadable_file(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    store = Store(tmp_path)
    previous = 0
    for _ in range(25):
        proc = subprocess.Popen([sys.executable, "-c", LOOP_WRITER, str(tmp_path)])
        time.sleep(0.25 + rng.random() * 0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        data = store.load("inventory")  # raises StoreError on a torn file
        count = len(data["nodes"])
        assert count >= previous  # the loop adds more than it removes: nothing went back
        previous = count
    assert previous > 1  # the writers did write


def test_adding_many_nodes_is_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgectl.inventory.model import Node

    writes: list[str] = []
    original = Store.write

    def counting_write(self: Store, name: str, data: dict[str, object]) -> None:
        writes.append(name)
        original(self, name, data)

    monkeypatch.setattr(Store, "write", counting_write)
    fleet = Fleet(tmp_path)
    fleet.add_nodes([Node(name=f"n{i}", host="10.0.0.1") for i in range(500)])
    assert writes == ["inventory"]
    assert len(fleet.inventory.names()) == 501
    fleet.add_node("one-more", host="10.0.0.2")
    # The backup is the state before the last write.
    backup = json.loads(fleet.store.backup_path("inventory").read_text())
    assert len(backup["nodes"]) == 501


def test_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.add_node("a", host="10.0.0.1")
    before = fleet.store.path("inventory").read_bytes()
    with pytest.raises(RuntimeError), fleet.store.transaction("inventory") as db:
        db.table("nodes").truncate()
        raise RuntimeError("boom")
    assert fleet.store.path("inventory").read_bytes() == before


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "the file is empty"),
        (b'{"nodes": {"1": {"name": "a"', "truncated JSON"),
        (b'{"nodes": {}}\n{"x": 1}', "trailing data"),
        (b"[1, 2, 3]", "not a JSON object of tables"),
        (b'{"nodes": 5}', "not a JSON object of tables"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"nodes": {"1": {"name": "a" "x"}}}', "invalid JSON at line 1"),
    ],
)
def test_damaged_file_gives_one_line_error_naming_file_and_way_out(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    fleet = Fleet(tmp_path)
    fleet.add_node("a", host="10.0.0.1")
    fleet.add_node("b", host="10.0.0.2")  # now inventory.json.bak holds local + a
    path = fleet.store.path("inventory")
    path.write_bytes(content)

    result = run_cli(tmp_path, "inventory", "list")
    assert result.exit_status == 5
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and problem in lines[0]
    assert "edgectl store restore inventory" in lines[0]
    assert path.read_bytes() == content  # never a silent reset

    # Writing is refused too, rather than replacing the damaged file.
    assert run_cli(tmp_path, "inventory", "add", "c", "--host", "10.0.0.3").exit_status == 5
    assert path.read_bytes() == content

    restored = run_cli(tmp_path, "store", "restore", "inventory")
    assert restored.exit_status == 0, restored.stderr
    assert Fleet(tmp_path).inventory.names() == ["local", "a"]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("inventory.json.broken-")]
    assert len(kept) == 1 and kept[0].read_bytes() == content


def test_damaged_file_without_backup_says_how_to_start_afresh(tmp_path: Path) -> None:
    Store(tmp_path).ensure_home()
    (tmp_path / "inventory.json").write_text("{")
    result = run_cli(tmp_path, "inventory", "list")
    assert result.exit_status == 5
    assert "no backup exists" in result.stderr and "mv " in result.stderr
    assert run_cli(tmp_path, "store", "restore", "inventory").exit_status == 5


def test_store_check_reports_each_file(tmp_path: Path) -> None:
    Fleet(tmp_path).add_node("a", host="10.0.0.1")
    assert run_cli(tmp_path, "store", "check").exit_status == 0
    (tmp_path / "jobs.json").write_text('{"jobs": {}} trailing')
    result = run_cli(tmp_path, "store", "check")
    assert result.exit_status == 5
    assert "jobs.json" in result.stderr and "inventory.json: ok" in result.stdout


def test_fresh_home_holds_the_local_node_and_is_private(tmp_path: Path) -> None:
    home = tmp_path / "new"
    nodes = Fleet(home).nodes()
    assert [(n.name, n.connection) for n in nodes] == [("local", "local")]
    Fleet(home).add_node("a", host="10.0.0.1")
    assert (home.stat().st_mode & 0o777) == 0o700
    assert (home / "inventory.json").stat().st_mode & 0o077 == 0


def test_unwritable_home_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; use a path under a regular file instead
        blocker = tmp_path / "file"
        blocker.write_text("")
        home = blocker / "home"
    else:
        home = tmp_path / "ro"
        home.mkdir(mode=0o500)
    result = run_cli(home, "inventory", "add", "a", "--host", "10.0.0.1")
    assert result.exit_status == 5
    assert str(home) in result.stderr


def test_store_error_is_an_edgectl_error() -> None:
    assert issubclass(StoreError, Exception)
    assert StoreError("x").exit_status == 5
