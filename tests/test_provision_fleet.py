"""`edgectl provision` against real sshd nodes: idempotence, --check, --diff, the ocr
playbook, rolling batches with --max-fail, and hostile values that must stay inert."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.inventory.model import Node
from edgectl.status import ExitStatus
from tests.cli import CliResult, run_cli
from tests.fleet import Fleet, stale_static_facts
from tests.test_fleet_view import make_home

pytestmark = pytest.mark.fleet

DATA = Path(__file__).parent / "data" / "playbooks"


def provision(home: Path, *args: str) -> CliResult:
    return run_cli(home, "provision", *args)


def by_node(result: CliResult) -> dict[str, dict[str, object]]:
    return {node["name"]: node for node in result.json["nodes"]}


def step_statuses(node: dict[str, object]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in node["steps"]}  # type: ignore[attr-defined]


def test_check_changes_nothing_then_a_run_converges_and_a_second_run_changes_nothing(
    fleet_factory, tmp_path: Path
) -> None:
    fleet = fleet_factory(2)
    home = make_home(tmp_path, fleet)
    EdgeFleet(home).label("n01", ["role=camera"])
    playbook = str(DATA / "idempotent.toml")
    work = [Path(n.workdir) for n in fleet.nodes]

    started = time.monotonic()
    check = provision(home, playbook, "n*", "--check", "--json")
    assert check.exit_status == 0, check.stderr
    assert check.json["check"] is True
    for name, node in by_node(check).items():
        statuses = step_statuses(node)
        assert statuses["app-dir"] == statuses["config"] == statuses["motd"] == "changed"
        assert statuses["marker"] == "changed"
        assert statuses["packages"] == "ok"  # installed here: no sudo needed to see that
        assert statuses["ssh-service"] == "skipped"  # no systemd on the test fleet
        assert statuses["clock"] == "ok"
        assert statuses["cameras-only"] == ("changed" if name == "n01" else "skipped")
    assert not any((w / "app").exists() for w in work), "--check must change nothing"
    assert check.json["refreshed"] == []

    first = provision(home, playbook, "n*", "--json")
    assert first.exit_status == 0, first.stderr
    assert first.json["summary"]["changed"] == 2
    for directory, node in zip(work, fleet.nodes, strict=True):
        app = directory / "app"
        assert stat.S_IMODE(app.stat().st_mode) == 0o750
        config = (app / "config.ini").read_text()
        assert f"name = {node.name}\n" in config and f"workdir = {directory}\n" in config
        assert "user = edgetest\n" in config and "langs = eng osd\n" in config
        assert stat.S_IMODE((app / "config.ini").stat().st_mode) == 0o640
        assert (app / "etc" / "motd.txt").read_bytes() == (DATA / "motd.txt").read_bytes()
        assert (app / "installed-at").exists()
    assert (work[0] / "app" / "camera").exists() and not (work[1] / "app" / "camera").exists()
    assert "role = camera\n" in (work[0] / "app" / "config.ini").read_text()
    assert "role = none\n" in (work[1] / "app" / "config.ini").read_text()
    marker = (work[0] / "app" / "installed-at").read_text()

    second = provision(home, playbook, "n*", "--json")
    assert second.exit_status == 0, second.stderr
    assert second.json["summary"]["steps_changed"] == 0
    assert {n["status"] for n in second.json["nodes"]} == {"ok"}
    assert (work[0] / "app" / "installed-at").read_text() == marker  # the guard held

    # Drift: a hand edit shows as a diff under --check, is left alone, then put right.
    config = work[1] / "app" / "config.ini"
    config.write_text(config.read_text().replace("greeting = hello", "greeting = edited"))
    config.chmod(0o644)
    diff = provision(home, playbook, "n02", "--check", "--diff")
    assert diff.exit_status == 0, diff.stderr
    assert "--- n02: step config" in diff.stdout
    assert "-greeting = edited" in diff.stdout and "+greeting = hello" in diff.stdout
    assert "would change" in diff.stdout
    assert "greeting = edited" in config.read_text()
    fixed = provision(home, playbook, "n02", "--json")
    assert step_statuses(by_node(fixed)["n02"])["config"] == "changed"
    assert "greeting = hello" in config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    print(f"idempotence test: {time.monotonic() - started:.1f}s")


def test_ocr_playbook_installs_the_runtime_and_status_shows_languages(
    fleet_factory, tmp_path: Path
) -> None:
    fleet = fleet_factory(2)
    home = make_home(tmp_path, fleet)
    before = run_cli(home, "status", "n*", "--json")
    assert all(r["reachable"] is None for r in before.json)  # never probed

    started = time.monotonic()
    result = provision(home, "ocr", "n*", "--json", "--timeout", "20")
    elapsed = time.monotonic() - started
    assert result.exit_status == 0, result.stderr + result.stdout
    for node in result.json["nodes"]:
        statuses = step_statuses(node)
        assert statuses["tesseract"] == statuses["python3"] == "ok"  # no root, no sudo needed
        assert statuses["runner-venv"] == "changed"
        assert statuses["languages"] == "ok"
    assert sorted(result.json["refreshed"]) == ["n01", "n02"]

    langs = run_cli(home, "run", "n*", "--json", "--", "tesseract", "--list-langs")
    for record in langs.json:
        assert {"eng", "chi_sim", "osd"} <= set(record["stdout"].split())
    python = f"{fleet.nodes[0].workdir}/venv/bin/python"
    smoke = run_cli(
        home,
        "run",
        "n01",
        "--json",
        "--",
        python,
        "-c",
        "import pytesseract, PIL; print(pytesseract.get_languages())",
    )
    assert smoke.exit_status == 0, smoke.stdout
    assert "chi_sim" in smoke.json[0]["stdout"]

    status = run_cli(home, "status", "n*", "--json")
    for record in status.json:
        assert {"eng", "chi_sim", "osd"} <= set(record["facts"]["tesseract_langs"])
        assert record["age_s"] < 120
    table = run_cli(home, "status", "n*")
    assert "(chi_sim+eng+osd)" in table.stdout

    again = provision(home, "ocr", "n*", "--json")
    assert again.exit_status == 0 and again.json["summary"]["steps_changed"] == 0
    print(f"ocr playbook on 2 nodes: {elapsed:.1f}s first run")


def test_refresh_after_provisioning_reads_static_facts_past_the_node_cache(
    fleet_factory, tmp_path: Path
) -> None:
    fleet = fleet_factory(1)
    home = make_home(tmp_path, fleet)
    probed = run_cli(home, "probe", "n01", "--json")
    assert probed.exit_status == 0, probed.stderr
    langs = probed.json[0]["facts"]["tesseract_langs"]
    assert len(langs) > 1
    # As if the languages were installed after the node cached its static facts unnoticed.
    stale_static_facts(fleet.nodes[0].workdir, ["eng"])
    assert run_cli(home, "probe", "n01", "--json").json[0]["facts"]["tesseract_langs"] == ["eng"]
    playbook = tmp_path / "workdir.toml"
    playbook.write_text('name = "workdir"\n\n[[steps]]\nname = "workdir"\ndir = "${workdir}"\n')
    result = provision(home, str(playbook), "n01", "--json")
    assert result.exit_status == 0, result.stderr + result.stdout
    assert result.json["refreshed"] == ["n01"]
    status = run_cli(home, "status", "n01", "--json")
    assert status.json[0]["facts"]["tesseract_langs"] == langs


def test_rolling_batches_stop_past_max_fail_and_name_who_failed_and_why(
    fleet_factory, tmp_path: Path
) -> None:
    fleet = fleet_factory(20)
    home = make_home(tmp_path, fleet)
    EdgeFleet(home).label("n03,n09,n10", ["health=bad"])
    playbook = str(DATA / "health.toml")

    started = time.monotonic()
    result = provision(home, playbook, "n*", "--serial", "5", "--max-fail", "25", "--json")
    elapsed = time.monotonic() - started
    assert result.exit_status == ExitStatus.PARTIAL, result.stderr
    nodes = by_node(result)
    failed = sorted(name for name, node in nodes.items() if node["status"] == "failed")
    assert failed == ["n03", "n09", "n10"]
    for name in failed:
        assert "health-check" in str(nodes[name]["error"])
        assert "unhealthy: bad" in str(nodes[name]["error"])
    # Batch 1 (n01-n05) had 20% failed: under 25%, so batch 2 ran; it had 40%: stop.
    ran = [f"n{i:02d}" for i in range(1, 11)]
    assert all(nodes[n]["status"] in ("changed", "failed") for n in ran)
    skipped = [f"n{i:02d}" for i in range(11, 21)]
    assert all(nodes[n]["status"] == "skipped" and not nodes[n]["steps"] for n in skipped)
    assert "batch 2 of 4" in result.json["stopped"] and "40%" in result.json["stopped"]
    assert sorted(result.json["refreshed"]) == sorted(ran)
    assert not any((Path(fleet.nodes[i].workdir) / "rolling").exists() for i in range(10, 20))

    # Without a threshold every batch runs; the summary names each failure for a person.
    plain = provision(home, playbook, "n*", "--serial", "10")
    assert plain.exit_status == ExitStatus.PARTIAL
    assert "20 node(s): 7 ok, 10 changed, 3 failed, 0 unreachable, 0 skipped" in plain.stdout
    for name in ("n03", "n09", "n10"):
        assert f"{name}: failed: step 'health-check'" in plain.stderr
        assert "unhealthy: bad" in plain.stderr
    summary_rows = [line for line in plain.stdout.splitlines() if " failed " in line]
    assert {row.split()[0] for row in summary_rows} >= {"n03", "n09", "n10"}
    print(f"rolling run over 20 nodes (2 batches + stop): {elapsed:.1f}s")


def test_hostile_label_values_are_substituted_inert(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    work = Path(fleet.nodes[0].workdir) / f"canary-{os.getpid()}-{time.monotonic_ns()}"
    canary = work / "CANARY"
    evil = f"$(touch {canary}); touch {canary} && `id` | '\"q\"' ${{name}} $HOME *"
    EdgeFleet(home).label("n01", [f"evil={evil}", f"out={work}"])
    result = provision(home, str(DATA / "canary.toml"), "n01", "--json")
    assert result.exit_status == 0, result.stdout
    assert not canary.exists(), "a value was run as code"
    assert (work / "shell.txt").read_text() == evil + "\n"
    assert (work / "argv.txt").read_text() == evil
    assert (work / "template.txt").read_text() == f"value: {evil}\n"
    assert step_statuses(by_node(result)["n01"])["guard"] == "changed"
    subprocess.run(["rm", "-rf", str(work)], check=True, timeout=30)


def test_unreachable_and_sudo_less_nodes_fail_with_reasons(fleet_factory, tmp_path: Path) -> None:
    fleet = fleet_factory(2)
    home = make_home(tmp_path, fleet)
    EdgeFleet(home).add_nodes([Node(**{**fleet.nodes[0].to_dict(), "name": "dead", "port": 1})])
    fleet.kill(1)
    playbook = tmp_path / "root.toml"
    playbook.write_text(
        '[[steps]]\nname = "needs-root"\napt = ["edgectl-no-such-package"]\nbecome = true\n'
    )
    result = provision(home, str(playbook), "n*,dead", "--json", "--timeout", "3")
    assert result.exit_status == ExitStatus.ALL_FAILED
    nodes = by_node(result)
    assert nodes["n02"]["status"] == nodes["dead"]["status"] == "unreachable"
    assert nodes["dead"]["reason"] == "refused"
    assert nodes["n01"]["status"] == "failed"
    assert "needs root" in str(nodes["n01"]["error"])  # sudo -n refused, no prompt, no hang
