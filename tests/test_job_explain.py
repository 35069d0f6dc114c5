"""`job submit --explain` on the real-sshd fleet: a dry run with per-node verdicts, changing nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.inventory.model import Node
from tests.cli import run_cli
from tests.fleet import Fleet
from tests.test_fleet_view import make_home

pytestmark = pytest.mark.fleet


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def explain(home: Path, inputs: Path, *extra: str, tty: bool = False):
    return run_cli(
        home,
        "job",
        "submit",
        "script",
        str(inputs),
        "--on",
        "n*,dead",
        "--run",
        "tr a-z A-Z < {input} > out/{stem}.up",
        "--explain",
        *extra,
        tty=tty,
    )


def test_explain_says_per_node_why_with_score_parts_and_changes_nothing(
    fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, fleet)
    EdgeFleet(home).add_nodes([Node(name="dead", host="127.0.0.1", port=closed_port())])
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(30):
        (inputs / f"in{i:02d}.txt").write_text("x" * 1000 * (i + 1))
    before = sorted(p.name for p in home.iterdir())
    result = explain(home, inputs, "--json")
    assert result.exit_status == 0, result.stderr
    document = result.json
    nodes = {n["node"]: n for n in document["nodes"]}
    assert set(nodes) == {"dead", *(n.name for n in fleet.nodes)}
    dead = nodes.pop("dead")
    assert not dead["eligible"] and dead["verdict"].startswith("rejected")
    assert "unreachable at the last probe" in dead["reasons"]
    chosen = [n for n in nodes.values() if n["tasks"]]
    assert len(chosen) >= 2
    assert sum(n["tasks"] for n in nodes.values()) == 30
    for node in chosen:
        assert node["eligible"] and node["verdict"].startswith("chosen")
        assert node["rate"] > 0 and node["rate_source"] == "prior"
        assert node["compute_s"] > 0 and node["transfer_s"] > 0  # every input must be pushed
        assert node["finish_s"] <= document["makespan_s"] + 1e-3
    assert document["makespan_s"] == pytest.approx(max(n["finish_s"] for n in chosen), abs=1e-3)
    [job] = document["jobs"]
    assert job["queued"] == 30 and job["status"] == "ready"
    assert document["unplaceable"] == {}
    # A dry run: no job stored, no facts recorded, nothing new under EDGECTL_HOME.
    assert run_cli(home, "job", "list", "--json").json == []
    assert sorted(p.name for p in home.iterdir()) == before
    for node in fleet.nodes:
        assert not list((Path(node.workdir) / "tasks").glob("t*"))


def test_explain_prints_a_table_and_the_predicted_makespan(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    EdgeFleet(home).add_nodes([Node(name="dead", host="127.0.0.1", port=closed_port())])
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(5):
        (inputs / f"in{i}.txt").write_text("hello\n")
    result = explain(home, inputs)
    assert result.exit_status == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "VERDICT", "TASKS"]
    dead = next(line for line in lines if line.startswith("dead"))
    assert "rejected" in dead and "unreachable" in dead
    assert any(line.startswith(fleet.nodes[0].name) for line in lines)
    assert "predicted makespan:" in lines[-1] and "nothing was submitted" in lines[-1]
