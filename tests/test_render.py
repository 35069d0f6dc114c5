"""Rendering: progress only on a terminal and only for more than a handful of nodes."""

from __future__ import annotations

import io

from edgectl.cli import render
from edgectl.cli.context import Environment
from edgectl.cli.fleet import fleet_status, human_age, human_bytes
from edgectl.status import ExitStatus


def test_no_progress_for_scripts() -> None:
    env = Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False, stderr_isatty=False
    )
    assert render.progress_factory(env, "probing") is None


def test_progress_bar_on_a_terminal_for_many_nodes_only() -> None:
    err = io.StringIO()
    env = Environment(stdout=io.StringIO(), stderr=err, stdout_isatty=True, stderr_isatty=True)
    factory = render.progress_factory(env, "probing")
    assert factory is not None
    with factory(3) as advance:
        advance("a")
    assert err.getvalue() == ""
    with factory(20) as advance:
        for i in range(20):
            advance(f"n{i}")
    assert "probing" in err.getvalue()


def test_fleet_status_and_human_units() -> None:
    assert fleet_status(3, 3) == ExitStatus.OK
    assert fleet_status(1, 3) == ExitStatus.PARTIAL
    assert fleet_status(0, 3) == ExitStatus.ALL_FAILED
    assert [human_bytes(v) for v in (None, 512, 1536, 3 * 1024**3)] == ["", "512B", "1.5K", "3.0G"]
    assert [human_age(v) for v in (None, 5, 600, 7300, 200000)] == [
        "never",
        "5s",
        "10m",
        "2h1m",
        "2d",
    ]
