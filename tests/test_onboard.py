"""Onboarding: range parsing (pure), discover on loopback, bootstrap by password on real sshd."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.errors import UsageError
from edgectl.inventory.model import Node
from edgectl.onboard import INSTALL_KEY, Target, expand_range, node_name, read_targets
from edgectl.status import ExitStatus
from tests.cli import run_cli
from tests.fleet import TEST_HOME, Fleet, cannot_run_here, free_port

PASSWORD = "Tr0ub4dor&3 'quoted' $(not-run)"


# --- ranges: pure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ports", "expected"),
    [
        ("10.0.0.5", [22], [("10.0.0.5", 22)]),
        ("10.0.0.5-10.0.0.7", [22], [("10.0.0.5", 22), ("10.0.0.6", 22), ("10.0.0.7", 22)]),
        ("127.0.1.1-3", [22], [("127.0.1.1", 22), ("127.0.1.2", 22), ("127.0.1.3", 22)]),
        ("192.0.2.0/30", [22], [("192.0.2.1", 22), ("192.0.2.2", 22)]),
        ("192.0.2.8/31", [22], [("192.0.2.8", 22), ("192.0.2.9", 22)]),
        ("192.0.2.1:2222", [22, 23], [("192.0.2.1", 2222)]),
        ("192.0.2.1", [22, 2222], [("192.0.2.1", 22), ("192.0.2.1", 2222)]),
        ("192.0.2.1,192.0.2.1, 192.0.2.2", [22], [("192.0.2.1", 22), ("192.0.2.2", 22)]),
        ("[2001:db8::1]:22", [2222], [("2001:db8::1", 22)]),
        ("2001:db8::1-2001:db8::2", [22], [("2001:db8::1", 22), ("2001:db8::2", 22)]),
    ],
)
def test_ranges_expand_to_exactly_the_addresses_given(
    spec: str, ports: list[int], expected: list[tuple[str, int]]
) -> None:
    assert expand_range(spec, ports) == [Target(h, p) for h, p in expected]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("10.0.0.0/15", "over 65536"),
        ("10.0.0.0/16,10.1.0.1-3", "over 65536"),
        ("2001:db8::/64", "over 65536"),
        ("10.0.0.9-10.0.0.1", "ends before"),
        ("10.0.0.1-300", "octet"),
        ("example.com", "not an IP address"),
        ("10.0.0.1:99999", "port"),
        ("10.0.0.0/33", "CIDR"),
    ],
)
def test_bad_or_huge_ranges_are_refused_before_any_connection(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        expand_range(spec, [22])


def test_a_file_of_addresses_and_generated_names(tmp_path: Path) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_text("# site A\n10.0.0.5\n10.0.0.6:2222  10.0.1.0/30 # two\n\n")
    assert read_targets(str(listing), [22]) == [
        Target("10.0.0.5", 22),
        Target("10.0.0.6", 2222),
        Target("10.0.1.1", 22),
        Target("10.0.1.2", 22),
    ]
    assert node_name("127.0.1.5", 22) == "node-127-0-1-5"
    assert node_name("127.0.1.5", 2222) == "node-127-0-1-5-p2222"
    assert node_name("2001:db8::1", 22) == "node-2001-db8--1"


def test_the_key_install_script_is_idempotent_and_mends_a_missing_newline(
    tmp_path: Path,
) -> None:
    home = tmp_path / "user"
    (home / ".ssh").mkdir(parents=True)
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAAother someone")  # no trailing newline
    line = "ssh-ed25519 AAAAedgectl edgectl@controller"
    argv = ["sh", "-c", INSTALL_KEY, "edgectl", line, "AAAAedgectl"]
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    outputs = [
        subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10).stdout.strip()
        for _ in range(2)
    ]
    assert outputs == ["installed", "present"]
    assert keys.read_text() == f"ssh-ed25519 AAAAother someone\n{line}\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700


# --- discover on loopback ---------------------------------------------------------------------


@pytest.mark.fleet
def test_discover_finds_exactly_the_fleets_sshd_and_adds_them(
    fleet_factory, tmp_path: Path
) -> None:
    fleet = fleet_factory(3)
    listener_host, listener_port = fleet.silent_listener()
    first, last = fleet.sshd[0].host, fleet.sshd[-1].host  # may cross a /24: full addresses
    closed_port = free_port(fleet.sshd[0].host)  # nothing listens: refused at once
    ports = [s.port for s in fleet.sshd] + [closed_port]
    home = tmp_path / "home"
    port_args = [arg for port in ports for arg in ("--port", str(port))]
    started = time.monotonic()
    found = run_cli(
        home,
        "inventory",
        "discover",
        f"{first}-{last},{listener_host}:{listener_port}",
        *port_args,
        "--timeout",
        "1",
        "--json",
    )
    elapsed = time.monotonic() - started
    assert found.exit_status == 0, found.stderr
    assert {(f["host"], f["port"]) for f in found.json} == {(s.host, s.port) for s in fleet.sshd}
    assert all(f["banner"].startswith("SSH-2.0-OpenSSH") for f in found.json)
    assert {f["state"] for f in found.json} == {"found"}
    assert elapsed < 5, f"discover took {elapsed:.1f}s"  # the silent listener costs 1 s
    assert run_cli(home, "inventory", "list", "--json").json[0]["name"] == "local"

    listing = tmp_path / "addresses.txt"
    listing.write_text("".join(f"{s.host}:{s.port}\n" for s in fleet.sshd))
    added = run_cli(
        home, "inventory", "discover", str(listing), "--add", "--group", "new", "--json"
    )
    assert {f["state"] for f in added.json} == {"added"}
    nodes = {n.name: n for n in EdgeFleet(home).nodes("@new")}
    for sshd in fleet.sshd:
        node = nodes[f"node-{sshd.host.replace('.', '-')}-p{sshd.port}"]
        assert (node.host, node.port) == (sshd.host, sshd.port)
    again = run_cli(home, "inventory", "discover", str(listing), "--add", "--json")
    assert {f["state"] for f in again.json} == {"known"}

    nothing = run_cli(home, "inventory", "discover", f"{listener_host}:{listener_port}")
    assert nothing.exit_status == ExitStatus.NOT_FOUND


# --- bootstrap by password ------------------------------------------------------------------


@pytest.fixture
def user_authorized_keys() -> Iterator[Path]:
    """The test user's ~/.ssh/authorized_keys, put back as it was afterwards."""
    path = TEST_HOME / ".ssh" / "authorized_keys"
    saved = path.read_bytes() if path.exists() else None
    existed = path.parent.exists()
    try:
        yield path
    finally:
        if saved is not None:
            path.write_bytes(saved)
        else:
            path.unlink(missing_ok=True)
            if not existed and path.parent.exists():
                path.parent.rmdir()


def use_home_authorized_keys(fleet: Fleet) -> None:
    """Let the fleet's sshd also read ~/.ssh/authorized_keys (as a stock sshd does)."""
    for sshd in fleet.sshd:
        config = sshd.config.read_text()
        config = re.sub(
            r"^AuthorizedKeysFile (\S+)$",
            r"AuthorizedKeysFile \1 .ssh/authorized_keys",
            config,
            flags=re.MULTILINE,
        )
        sshd.config.write_text(config)
        fleet.restart(sshd.index)


@pytest.mark.fleet
def test_bootstrap_installs_the_key_by_password_then_key_only_login_works(
    fleet_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_authorized_keys: Path
) -> None:
    if os.geteuid() != 0:
        cannot_run_here("setting the test user's password needs root")
    fleet = fleet_factory(2, password=PASSWORD, password_nodes=[0])
    use_home_authorized_keys(fleet)
    home = tmp_path / "home"
    # No key of their own, and host keys not yet known: trust comes from --accept-new.
    EdgeFleet(home).add_nodes([Node(**{**n.to_dict(), "key": None}) for n in fleet.nodes])

    no_password = run_cli(home, "inventory", "bootstrap", "n*")
    assert no_password.exit_status == ExitStatus.USAGE
    assert "--password-env" in no_password.stderr
    assert not (home / "known_hosts").exists()  # nothing was contacted

    monkeypatch.setenv("EDGE_PASSWORD", PASSWORD)
    started = time.monotonic()
    first = run_cli(
        home, "inventory", "bootstrap", "n01", "--password-env", "EDGE_PASSWORD", "--json"
    )
    assert first.exit_status == ExitStatus.ALL_FAILED
    assert first.json[0]["reason"] == "hostkey-unknown"  # no trust on first use unasked

    result = run_cli(
        home,
        "inventory",
        "bootstrap",
        "n*",
        "--password-env",
        "EDGE_PASSWORD",
        "--accept-new",
        "--json",
    )
    elapsed = time.monotonic() - started
    assert result.exit_status == ExitStatus.PARTIAL, result.stdout + result.stderr
    outcome = {r["name"]: r for r in result.json}
    assert outcome["n01"]["status"] == "installed"
    assert outcome["n01"]["steps"][-1] == "key-only login verified"
    assert outcome["n02"]["status"] == "failed"  # its sshd takes no passwords
    assert outcome["n02"]["reason"] == "auth"

    key = home / "id_ed25519"
    public = (home / "id_ed25519.pub").read_text().strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert user_authorized_keys.read_text().count(public.split()[1]) == 1
    assert EdgeFleet(home).node("n01").key == str(key)
    assert EdgeFleet(home).node("n02").key is None
    known = (home / "known_hosts").read_text()
    assert all(f"[{s.host}]:{s.port} " in known for s in fleet.sshd)

    # Key-only login through the ordinary transport: `probe` with the node's new key.
    probe = run_cli(home, "probe", "n01", "--json")
    assert probe.exit_status == 0, probe.stdout
    # A second bootstrap needs no password for n01 and adds no second line.
    monkeypatch.delenv("EDGE_PASSWORD")
    monkeypatch.setenv("EDGE_PASSWORD", "wrong")
    again = run_cli(home, "inventory", "bootstrap", "n01", "--password-env", "EDGE_PASSWORD")
    assert again.exit_status == 0, again.stderr
    assert "present" in again.stdout
    assert user_authorized_keys.read_text().count(public.split()[1]) == 1

    # The password is nowhere: not in the home's files, not in what was printed.
    for path in home.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    for text in (result.stdout, result.stderr, first.stdout, first.stderr):
        assert PASSWORD not in text
    print(f"bootstrap of 2 nodes: {elapsed:.1f}s")


@pytest.fixture
def default_workdir() -> Iterator[Path]:
    """The test user's default workdir (~/.edgectl), removed afterwards if it was not there."""
    path = TEST_HOME / ".edgectl"
    existed = path.exists()
    try:
        yield path
    finally:
        if not existed:
            subprocess.run(["rm", "-rf", str(path)], check=False, timeout=30)


@pytest.mark.fleet
def test_three_commands_take_new_devices_from_addresses_to_provisioned(
    fleet_factory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    user_authorized_keys: Path,
    default_workdir: Path,
) -> None:
    if os.geteuid() != 0:
        cannot_run_here("setting the test user's password needs root")
    fleet = fleet_factory(2, password=PASSWORD)
    use_home_authorized_keys(fleet)
    home = tmp_path / "home"
    listing = tmp_path / "new-devices.txt"
    listing.write_text("".join(f"{s.host}:{s.port}\n" for s in fleet.sshd))
    monkeypatch.setenv("EDGE_PASSWORD", PASSWORD)

    found = run_cli(
        home, "inventory", "discover", str(listing), "--add", "--group", "new", "--user", "edgetest"
    )
    assert found.exit_status == 0, found.stderr
    booted = run_cli(
        home, "inventory", "bootstrap", "@new", "--password-env", "EDGE_PASSWORD", "--accept-new"
    )
    assert booted.exit_status == 0, booted.stdout + booted.stderr
    provisioned = run_cli(home, "provision", "base", "@new", "--json")
    assert provisioned.exit_status == 0, provisioned.stdout
    assert {n["status"] for n in provisioned.json["nodes"]} <= {"ok", "changed"}
    assert len(provisioned.json["nodes"]) == 2
    assert default_workdir.is_dir()
