"""probe, status and run against real sshd processes on loopback addresses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.inventory.model import Node
from edgectl.status import ExitStatus
from tests.cli import run_cli
from tests.fleet import Fleet, stale_static_facts

pytestmark = pytest.mark.fleet


def make_home(tmp_path: Path, fleet: Fleet, trusted: bool = True, prefix: str = "") -> Path:
    """An EDGECTL_HOME whose inventory holds the fleet (and `local`), trusting its host keys."""
    home = tmp_path / "home"
    nodes = [Node(**{**node.to_dict(), "name": prefix + node.name}) for node in fleet.nodes]
    EdgeFleet(home).add_nodes(nodes)
    if trusted:
        fleet.write_known_hosts(home / "known_hosts")
    return home


def test_probe_reads_facts_of_every_node_and_stores_them(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    result = run_cli(home, "probe", "--json", "--timeout", "10")
    assert result.exit_status == 0, result.stderr
    records = {r["name"]: r for r in result.json}
    assert set(records) == {"local", *(n.name for n in fleet.nodes)}
    memory = psutil.virtual_memory().total
    for record in records.values():
        assert record["reachable"] is True and record["reason"] is None
        facts = record["facts"]
        assert facts["cores"] == os.cpu_count()
        assert facts["mem_total"] == pytest.approx(memory, rel=0.01)
        assert facts["arch"] == os.uname().machine
        assert 0 < facts["disk_free"] <= facts["disk_total"]
        assert facts["load1"] is not None and facts["load_pct"] is not None
        assert facts["uptime_s"] > 0 and facts["rtt_ms"] > 0
        assert "eng" in facts["tesseract_langs"]
    status = run_cli(home, "status", "--json")
    assert status.exit_status == 0
    stored = {r["name"]: r for r in status.json}
    assert stored["n01"]["facts"] == records["n01"]["facts"]
    assert 0 <= stored["n01"]["age_s"] < 60
    # Facts feed selectors.
    chosen = run_cli(home, "inventory", "list", "lang=osd,&has=tesseract,&cores>=1", "--json")
    assert len(chosen.json) == len(records)


def test_ssh_probe_and_psutil_agree_on_this_machine(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    workdir = fleet.nodes[0].workdir
    run_cli(home, "inventory", "set", "local", f"workdir={workdir}")
    result = run_cli(home, "probe", "local,n01", "--json")
    assert result.exit_status == 0, result.stderr
    local, ssh = (r["facts"] for r in result.json)
    for name in (
        "hostname",
        "kernel",
        "arch",
        "cores",
        "os",
        "mem_total",
        "disk_total",
        "tesseract",
        "tesseract_langs",
    ):
        assert local[name] == ssh[name], name
    # python3 is whichever one PATH finds: a login shell's PATH may differ from ours.
    assert local["python3"].split(".")[:1] == ssh["python3"].split(".")[:1] == ["3"]
    assert local["disk_free"] == pytest.approx(ssh["disk_free"], rel=0.02)
    assert local["mem_available"] == pytest.approx(ssh["mem_available"], rel=0.1)
    assert local["uptime_s"] == pytest.approx(ssh["uptime_s"], abs=30)
    assert abs(local["load1"] - ssh["load1"]) < 2.0


def test_probe_reuses_the_node_cache_of_static_facts_until_asked_for_full(
    fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, fleet)
    first = run_cli(home, "probe", "n01", "--json", "--full")
    assert first.exit_status == 0, first.stderr
    langs = first.json[0]["facts"]["tesseract_langs"]
    assert "eng" in langs and len(langs) > 1
    cache = stale_static_facts(fleet.nodes[0].workdir, ["eng"])
    try:
        cached = run_cli(home, "probe", "n01", "--json")
        assert cached.json[0]["facts"]["tesseract_langs"] == ["eng"]  # the node's cache answered
        assert cached.json[0]["facts"]["load1"] is not None
        full = run_cli(home, "probe", "n01", "--json", "--full")
        assert full.json[0]["facts"]["tesseract_langs"] == langs
        again = run_cli(home, "probe", "n01", "--json")
        assert again.json[0]["facts"]["tesseract_langs"] == langs  # --full renewed the cache
    finally:
        cache.unlink(missing_ok=True)


def test_faults_each_get_their_reason_and_cost_only_their_timeout(
    fleet: Fleet, fleet_factory, tmp_path: Path
) -> None:
    broken = fleet_factory(4)
    home = make_home(tmp_path, fleet)
    fleet_store = EdgeFleet(home)
    broken.write_known_hosts(home / "known_hosts.broken")
    (home / "known_hosts").write_text(
        (home / "known_hosts").read_text() + (home / "known_hosts.broken").read_text()
    )
    listener_host, listener_port = broken.silent_listener()
    bad = broken.nodes
    fleet_store.add_nodes(
        [
            Node(**{**bad[0].to_dict(), "name": "hung"}),
            Node(**{**bad[1].to_dict(), "name": "dead"}),
            Node(**{**bad[2].to_dict(), "name": "rekeyed"}),
            Node(**{**bad[3].to_dict(), "name": "wronguser", "user": "nosuchuser"}),
            Node(
                name="silent",
                host=listener_host,
                port=listener_port,
                user=bad[0].user,
                key=bad[0].key,
            ),
            Node(
                name="nodns", host="nonexistent.invalid", port=22, user=bad[0].user, key=bad[0].key
            ),
        ]
    )
    broken.stop(0)
    broken.kill(1)
    broken.restart(2, new_host_key=True)
    timeout = 2.0
    started = time.monotonic()
    result = run_cli(home, "probe", "--json", "--timeout", str(timeout), "--accept-new")
    elapsed = time.monotonic() - started
    assert result.exit_status == ExitStatus.PARTIAL
    reasons = {r["name"]: r["reason"] for r in result.json}
    assert reasons["hung"] == "timeout"
    assert reasons["dead"] == "refused"
    assert reasons["rekeyed"] == "hostkey-changed"  # even with --accept-new
    assert reasons["wronguser"] == "auth"
    assert reasons["silent"] == "timeout"
    assert reasons["nodns"] == "dns"
    for node in fleet.nodes:
        assert reasons[node.name] is None
    assert elapsed <= timeout + 2.0, f"probe took {elapsed:.1f}s"
    # The round was stored: unreachable nodes keep a reason in `status`.
    stored = {r["name"]: r for r in run_cli(home, "status", "--json").json}
    assert stored["dead"]["reachable"] is False and stored["dead"]["reason"] == "refused"
    broken.cont(0)


def test_unknown_host_key_is_refused_then_trusted_on_first_use(
    fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, fleet, trusted=False)
    refused = run_cli(home, "probe", "n01", "--json", "--timeout", "5")
    assert refused.exit_status == ExitStatus.ALL_FAILED
    assert refused.json[0]["reason"] == "hostkey-unknown"
    accepted = run_cli(home, "probe", "n01", "--json", "--accept-new", "--timeout", "5")
    assert accepted.exit_status == 0, accepted.stderr
    lines = (home / "known_hosts").read_text().splitlines()
    assert len(lines) == 1 and fleet.sshd[0].public_key() in lines[0]
    again = run_cli(home, "probe", "n01", "--json", "--timeout", "5")
    assert again.exit_status == 0
    assert len((home / "known_hosts").read_text().splitlines()) == 1


def test_run_groups_identical_outputs_and_reports_each_status(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    script = 'case "$(hostname):$PWD" in *) echo same;; esac; [ -e "$HOME/.odd" ] && exit 3; exit 0'
    result = run_cli(home, "run", "n*", "--json", "--", "sh", "-c", script)
    assert result.exit_status == 0, result.stderr
    assert [r["stdout"] for r in result.json] == ["same\n"] * len(fleet.nodes)
    plain = run_cli(home, "run", "n*,local", "--", "sh", "-c", "echo same")
    assert plain.exit_status == 0
    names = ",".join(sorted([*(n.name for n in fleet.nodes), "local"]))
    assert f"{names} ({len(fleet.nodes) + 1}) exit 0" in plain.stdout
    assert plain.stdout.count("same\n") == 1

    failing = run_cli(
        home, "run", "n01,n02", "--json", "--", "sh", "-c", "echo out; echo err >&2; exit 4"
    )
    assert failing.exit_status == ExitStatus.ALL_FAILED
    assert {(r["exit_status"], r["stdout"], r["stderr"]) for r in failing.json} == {
        (4, "out\n", "err\n")
    }
    assert all(r["duration"] >= 0 for r in failing.json)


def test_run_passes_hostile_arguments_intact(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    canary = Path(fleet.nodes[0].workdir) / "canary"
    hostile = [
        f"; touch {canary}",
        f"$(touch {canary})",
        f"`touch {canary}`",
        "it's",
        'a "b"',
        "-n",
        "two words",
        "*",
    ]
    result = run_cli(home, "run", "n01,local", "--json", "--", "printf", "%s\\n", *hostile)
    assert result.exit_status == 0, result.stderr
    for record in result.json:
        assert record["stdout"].splitlines() == hostile
    assert not canary.exists()
