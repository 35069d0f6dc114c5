"""`python` steps: user functions get a Fabric Connection that verifies host keys like the
transport (Fabric's own default would trust any key), against real sshd nodes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgectl.provision.pythonstep import PythonStepError, fabric_connection, open_verified
from tests.cli import run_cli
from tests.fleet import trusting_options
from tests.test_fleet_view import make_home

pytestmark = pytest.mark.fleet

DATA = Path(__file__).parent / "data" / "playbooks"

# Called by tests/data/playbooks/steps.py:call_hook, between two python steps.
HOOKS: dict[str, Callable[[str], None]] = {}


def test_python_step_runs_over_fabric_is_skipped_by_check_and_is_idempotent(
    fleet_factory, tmp_path: Path
) -> None:
    fleet = fleet_factory(2)
    home = make_home(tmp_path, fleet)
    playbook = str(DATA / "python.toml")
    markers = [Path(n.workdir) / "fabric-marker" for n in fleet.nodes]

    check = run_cli(home, "provision", playbook, "n*", "--check", "--json")
    assert check.exit_status == 0, check.stdout
    for node in check.json["nodes"]:
        assert node["steps"][0]["status"] == "skipped"
        assert "check_mode" in node["steps"][0]["message"]
    assert not any(m.exists() for m in markers)

    first = run_cli(home, "provision", playbook, "n*", "--json")
    assert first.exit_status == 0, first.stdout
    assert {n["steps"][0]["status"] for n in first.json["nodes"]} == {"changed"}
    for marker, node in zip(markers, fleet.nodes, strict=True):
        assert marker.read_text() == f"written by fabric on {node.name} as edgetest\n"

    second = run_cli(home, "provision", playbook, "n*", "--json")
    assert second.exit_status == 0
    assert {n["steps"][0]["status"] for n in second.json["nodes"]} == {"ok"}


def test_fabric_connection_refuses_changed_and_unknown_host_keys(
    fleet_factory, tmp_path: Path
) -> None:
    import fabric

    fleet = fleet_factory(2)
    options = trusting_options(fleet, tmp_path)
    fleet.write_known_hosts(options.known_hosts_path, indices=[0])  # n02 is unknown
    known = fabric_connection(fleet.nodes[0], options, 10)
    open_verified(known, fleet.nodes[0])
    assert known.run("echo ok", hide=True).stdout == "ok\n"
    known.close()

    fleet.restart(0, new_host_key=True)
    changed = fabric_connection(fleet.nodes[0], options, 10)
    with pytest.raises(PythonStepError, match="HOST KEY CHANGED"):
        open_verified(changed, fleet.nodes[0])
    unknown = fabric_connection(fleet.nodes[1], options, 10)
    with pytest.raises(PythonStepError, match="unknown host key"):
        open_verified(unknown, fleet.nodes[1])
    assert len(options.known_hosts_path.read_text().splitlines()) == 1  # nothing recorded

    # What the policy guards against: Fabric's default connects to the unknown node anyway.
    node = fleet.nodes[1]
    default = fabric.Connection(
        node.host, user=node.user, port=node.port, connect_kwargs={"key_filename": [node.key]}
    )
    try:
        assert default.run("true", hide=True, in_stream=False).ok
    finally:
        default.close()


def test_a_host_key_change_between_steps_fails_the_next_python_step(
    fleet_factory, tmp_path: Path
) -> None:
    fleet = fleet_factory(1)
    home = make_home(tmp_path, fleet)
    replaced: list[str] = []

    def new_key(name: str) -> None:
        fleet.restart(0, new_host_key=True)
        replaced.append(name)

    HOOKS["between"] = new_key
    try:
        result = run_cli(home, "provision", str(DATA / "rekey.toml"), "n01", "--json")
    finally:
        HOOKS.clear()
    assert replaced == ["n01"]
    assert result.exit_status == 7, result.stdout
    steps = {s["name"]: s for s in result.json["nodes"][0]["steps"]}
    assert steps["rekey"]["status"] == "changed"
    assert steps["marker"]["status"] == "failed"
    assert "HOST KEY CHANGED" in steps["marker"]["message"]
    assert not (Path(fleet.nodes[0].workdir) / "fabric-marker").exists()
