"""`edgectl top`: repeated rounds reuse connections; the live view quits on `q`."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from tests.cli import run_cli
from tests.fleet import Fleet, cannot_run_here
from tests.test_fleet_view import make_home

pytestmark = pytest.mark.fleet


def test_rounds_reuse_connections(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    edge = EdgeFleet(home)
    nodes = edge.nodes("n*")

    async def two_rounds() -> tuple[int, int, list[bool]]:
        async with edge.pool(timeout=10) as pool:
            first = await edge.probe_async(nodes, pool, 10)
            opened = pool.opened
            second = await edge.probe_async(nodes, pool, 10)
            return opened, pool.opened, [r.reachable for r in first + second]

    opened_first, opened_second, reachable = asyncio.run(two_rounds())
    assert opened_first == len(nodes) == opened_second
    assert all(reachable)
    # Each round is stored: the history holds one sample per round.
    assert len(edge.facts_store.history("n01")) == 2


def test_top_without_terminal_prints_the_rounds_asked_for(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    result = run_cli(home, "top", "n*", "--count", "2", "--interval", "0.2")
    assert result.exit_status == 0, result.stderr
    assert result.stdout.count("NAME") == 2
    assert result.stdout.count("n01 ") == 2


def test_live_top_in_a_terminal_quits_on_q(fleet: Fleet, tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        cannot_run_here("tmux is not installed (tests/run.sh installs it)")
    home = make_home(tmp_path, fleet)
    session = f"edgectl-top-{int(time.time() * 1000)}"
    done = tmp_path / "exit-status"
    command = f"{sys.executable} -m edgectl --home {home} top --interval 0.3; echo $? > {done}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "30", command], check=True
    )
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "round 2" not in screen:
            time.sleep(0.2)
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
        assert "round 2" in screen, screen
        assert "n04" in screen and "up" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not done.exists():
            time.sleep(0.1)
        assert done.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def probe_shells(workdir: str) -> list[int]:
    """Pids of the probe session shells running for one node (found by their argv)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"edgectl-probe" in argv and workdir.encode() in argv:
            pids.append(int(entry.name))
    return pids


def test_rounds_reuse_the_probe_session_and_restart_a_killed_one(
    fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, fleet)
    edge = EdgeFleet(home)
    nodes = edge.nodes("n01,n02")
    first_node, second_node = (node.workdir for node in nodes)

    async def rounds() -> tuple[list[int], list[int], list[int], list[bool]]:
        async with edge.pool(timeout=10) as pool:
            first = await edge.probe_async(nodes, pool, 10)
            kept = probe_shells(second_node)
            killed = probe_shells(first_node)
            for pid in killed:  # shells our own probe started, one per node
                os.kill(pid, signal.SIGKILL)
            second = await edge.probe_async(nodes, pool, 10)
            return kept, probe_shells(second_node), killed, [r.reachable for r in first + second]

    kept_before, kept_after, killed, reachable = asyncio.run(rounds())
    assert len(kept_before) == 1 and kept_after == kept_before  # round two used the same shell
    assert len(killed) == 1
    assert all(reachable)  # the killed session was started afresh, not reported as down


def test_a_probe_that_keeps_no_session_leaves_no_shell_behind(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    edge = EdgeFleet(home)
    nodes = edge.nodes("n03")

    async def one_round() -> tuple[bool, list[int]]:
        async with edge.pool(timeout=10) as pool:
            results = await edge.probe_async(nodes, pool, 10, keep_session=False)
            left = probe_shells(nodes[0].workdir)
            for _ in range(40):  # the channel is closed: the shell goes within moments
                if not left:
                    break
                await asyncio.sleep(0.05)
                left = probe_shells(nodes[0].workdir)
            return results[0].reachable, left

    reachable, left = asyncio.run(one_round())
    assert reachable and left == []
