"""The transport against real sshd: commands, quoting, caps, files, host keys and faults."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgectl.inventory.model import Node
from edgectl.transport import ConnectionPool, check_nofile, open_connection
from edgectl.transport.base import Connection, ConnectOptions, MiB, RunResult, TransportError
from tests.fleet import Fleet, trusting_options

T = TypeVar("T")
FAULT_TIMEOUT = 1.0  # connect and login timeouts of the fault tests
HOSTILE = [
    "; touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "&& touch {canary}",
    "| touch {canary}",
    "> {canary}",
    "'single' \"double\" quotes",
    "it's",
    "with  two spaces",
    "-n",
    "--version",
    "-",
    "$HOME ${PATH} $((1+1))",
    "*",
    "~",
    "back\\slash",
    "line\nbreak",
    "tab\there",
    "",
    "ünïcödé ✓",
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion (the suite has no asyncio plugin)."""
    return asyncio.run(coro)


@asynccontextmanager
async def connected(node: Node, options: ConnectOptions) -> AsyncIterator[Connection]:
    """An open connection, closed on the way out."""
    conn = await open_connection(node, options)
    try:
        yield conn
    finally:
        await conn.close()


def connect_error(node: Node, options: ConnectOptions) -> tuple[TransportError, float]:
    """The TransportError connecting raises, and how long it took."""
    start = time.monotonic()
    with pytest.raises(TransportError) as caught:
        run(open_connection(node, options))
    return caught.value, time.monotonic() - start


def fault_options(fleet: Fleet, directory: Path, **overrides: object) -> ConnectOptions:
    """Trusting options with the short timeouts of the fault tests."""
    settings: dict[str, object] = {
        "connect_timeout": FAULT_TIMEOUT,
        "login_timeout": FAULT_TIMEOUT,
    }
    settings.update(overrides)
    return trusting_options(fleet, directory, **settings)


# -- the same behaviour over SSH and over the local connection ---------------------------


@pytest.fixture(params=[pytest.param("ssh", marks=pytest.mark.fleet), "local"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Node, ConnectOptions, Path]:
    """(node, options, a workdir the node can write) for an SSH node and the local node."""
    if request.param == "local":
        workdir = tmp_path / "local-work"
        workdir.mkdir()
        options = ConnectOptions(known_hosts_path=tmp_path / "known_hosts", user_known_hosts=None)
        node = Node(name="local", host="localhost", connection="local", workdir=str(workdir))
        return node, options, workdir
    fleet: Fleet = request.getfixturevalue("fleet")
    options = trusting_options(fleet, tmp_path)
    node = fleet.nodes[0]
    return node, options, Path(node.workdir)


def test_run_returns_stdout_stderr_and_exit_status(
    target: tuple[Node, ConnectOptions, Path],
) -> None:
    node, options, _ = target

    async def scenario() -> RunResult:
        async with connected(node, options) as conn:
            return await conn.run(["sh", "-c", "echo out; echo err >&2; exit 3"])

    result = run(scenario())
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.ok and not result.truncated and result.duration >= 0


def test_hostile_arguments_reach_the_remote_argv_intact(
    target: tuple[Node, ConnectOptions, Path],
) -> None:
    node, options, workdir = target
    canary = workdir / "canary"
    args = [arg.replace("{canary}", str(canary)) for arg in HOSTILE]

    async def scenario() -> tuple[RunResult, RunResult]:
        async with connected(node, options) as conn:
            printed = await conn.run(["printf", "%s\\0", *args])
            probe = await conn.run(["test", "-e", str(canary)])
            return printed, probe

    printed, probe = run(scenario())
    assert printed.exit_status == 0, printed.stderr_text
    assert printed.stdout.decode().split("\0")[:-1] == args
    assert probe.exit_status == 1, "the canary exists: an argument was run as a command"
    assert not canary.exists()


def test_script_runs_on_stdin_in_one_round_trip(target: tuple[Node, ConnectOptions, Path]) -> None:
    node, options, _ = target
    script = 'total=$((40 + 2))\necho "total=$total"\nuname -s\nexit 5\n'

    async def scenario() -> RunResult:
        async with connected(node, options) as conn:
            return await conn.run(script=script)

    result = run(scenario())
    assert result.stdout_text == "total=42\nLinux\n"
    assert result.exit_status == 5


def test_stdin_bytes_reach_the_command(target: tuple[Node, ConnectOptions, Path]) -> None:
    node, options, _ = target
    data = os.urandom(3 * MiB)

    async def scenario() -> RunResult:
        async with connected(node, options) as conn:
            return await conn.run(["cat"], stdin=data)

    result = run(scenario())
    assert result.ok and result.stdout == data


def test_output_over_the_cap_is_truncated_and_memory_stays_bounded(
    target: tuple[Node, ConnectOptions, Path],
) -> None:
    node, options, _ = target

    async def scenario() -> tuple[RunResult, RunResult]:
        async with connected(node, options) as conn:
            tracemalloc.start()
            try:
                capped = await conn.run(["head", "-c", "50M", "/dev/zero"], max_output=MiB)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 12 * MiB, f"peak {peak / MiB:.1f} MiB while reading a capped stream"
            after = await conn.run(["echo", "still usable"])
            return capped, after

    capped, after = run(scenario())
    assert capped.truncated and not capped.ok
    assert capped.stdout == b"\0" * MiB
    assert capped.exit_status is None
    assert capped.duration < 10
    assert after.stdout == b"still usable\n"


def test_command_timeout_raises_and_kills_the_command(
    target: tuple[Node, ConnectOptions, Path],
) -> None:
    node, options, workdir = target
    marker = workdir / "timeout-survived"

    async def scenario() -> tuple[float, RunResult]:
        async with connected(node, options) as conn:
            start = time.monotonic()
            with pytest.raises(TransportError) as caught:
                await conn.run(["sh", "-c", f"sleep 1; touch {marker}"], timeout=0.3)
            elapsed = time.monotonic() - start
            assert caught.value.reason == "timeout"
            await asyncio.sleep(1.3)
            return elapsed, await conn.run(["echo", "ok"])

    elapsed, after = run(scenario())
    assert elapsed < 1.0
    assert not marker.exists(), "the timed-out command went on running"
    assert after.stdout == b"ok\n"


def test_put_then_get_round_trips_a_file(
    target: tuple[Node, ConnectOptions, Path], tmp_path: Path
) -> None:
    node, options, workdir = target
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(5 * MiB + 123))
    back = tmp_path / "back.bin"

    async def scenario() -> int:
        async with connected(node, options) as conn:
            await conn.put(source, str(workdir / "pushed.bin"))
            return await conn.get(str(workdir / "pushed.bin"), back, max_size=10 * MiB)

    size = run(scenario())
    assert size == source.stat().st_size
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest


def test_get_refuses_files_over_max_size_and_directories(
    target: tuple[Node, ConnectOptions, Path], tmp_path: Path
) -> None:
    node, options, workdir = target
    (workdir / "big.bin").write_bytes(b"x" * 4096)
    os.chmod(workdir / "big.bin", 0o644)
    local = tmp_path / "big.bin"

    async def scenario() -> list[TransportError]:
        errors = []
        async with connected(node, options) as conn:
            for remote, limit in ((workdir / "big.bin", 1000), (workdir, 10 * MiB)):
                try:
                    await conn.get(str(remote), local, max_size=limit)
                except TransportError as exc:
                    errors.append(exc)
        return errors

    too_big, directory = run(scenario())
    assert "over 1000" in str(too_big)
    assert "not a regular file" in str(directory)
    assert list(tmp_path.glob("*big.bin*")) == [], "a partial download was left behind"


# -- host keys -------------------------------------------------------------------------


@pytest.mark.fleet
def test_unknown_host_key_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    options = ConnectOptions(known_hosts_path=tmp_path / "known_hosts", user_known_hosts=None)
    error, _ = connect_error(fleet.nodes[0], options)
    assert error.reason == "hostkey-unknown"
    assert "SHA256:" in str(error) and fleet.nodes[0].host in str(error)
    assert not options.known_hosts_path.exists()


@pytest.mark.fleet
def test_accept_new_records_the_key_once_and_trusts_it_after(fleet: Fleet, tmp_path: Path) -> None:
    known_hosts = tmp_path / "edgectl" / "known_hosts"
    node = fleet.nodes[1]
    accepting = ConnectOptions(known_hosts_path=known_hosts, accept_new=True, user_known_hosts=None)

    async def scenario() -> RunResult:
        for _ in range(2):
            async with connected(node, accepting) as conn:
                await conn.run(["true"])
        strict = ConnectOptions(known_hosts_path=known_hosts, user_known_hosts=None)
        async with connected(node, strict) as conn:
            return await conn.run(["echo", "trusted"])

    assert run(scenario()).stdout == b"trusted\n"
    assert known_hosts.read_text().splitlines() == fleet.known_hosts_lines([1])
    assert known_hosts.stat().st_mode & 0o077 == 0


@pytest.mark.fleet
def test_parallel_accept_new_writes_one_line_per_host(fleet: Fleet, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    options = ConnectOptions(known_hosts_path=known_hosts, accept_new=True, user_known_hosts=None)

    async def scenario() -> None:
        conns = await asyncio.gather(*(open_connection(n, options) for n in fleet.nodes * 3))
        await asyncio.gather(*(conn.close() for conn in conns))

    run(scenario())
    assert sorted(known_hosts.read_text().splitlines()) == sorted(fleet.known_hosts_lines())


@pytest.mark.fleet
def test_changed_host_key_is_refused_even_with_accept_new(
    fleet_factory: Callable[..., Fleet], tmp_path: Path
) -> None:
    fleet = fleet_factory(1)
    options = fault_options(fleet, tmp_path, accept_new=True)
    before = options.known_hosts_path.read_text()
    fleet.restart(0, new_host_key=True)
    error, _ = connect_error(fleet.nodes[0], options)
    assert error.reason == "hostkey-changed"
    assert "CHANGED" in str(error) and f"[{fleet.nodes[0].host}]:{fleet.nodes[0].port}" in str(
        error
    )
    assert str(error).count("SHA256:") == 2  # offered and known fingerprints
    assert options.known_hosts_path.read_text() == before


@pytest.mark.fleet
def test_user_known_hosts_file_none_in_ssh_config_does_not_disable_checking(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host *\n  UserKnownHostsFile none\n  StrictHostKeyChecking no\n"
    )
    monkeypatch.setenv("HOME", str(home))
    options = ConnectOptions(known_hosts_path=tmp_path / "known_hosts")  # user file: ~/...
    error, _ = connect_error(fleet.nodes[0], options)
    assert error.reason == "hostkey-unknown"
    # The user's own known_hosts is still honoured.
    fleet.write_known_hosts(home / ".ssh" / "known_hosts", [0])

    async def scenario() -> RunResult:
        async with connected(fleet.nodes[0], options) as conn:
            return await conn.run(["true"])

    assert run(scenario()).ok


# -- faults ----------------------------------------------------------------------------


@pytest.mark.fleet
def test_stopped_sshd_times_out_within_the_bound(
    fleet_factory: Callable[..., Fleet], tmp_path: Path
) -> None:
    fleet = fleet_factory(1)
    options = fault_options(fleet, tmp_path)
    fleet.stop(0)
    error, elapsed = connect_error(fleet.nodes[0], options)
    assert error.reason == "timeout"
    assert elapsed < options.connect_timeout + options.login_timeout + 2


@pytest.mark.fleet
def test_killed_sshd_is_refused(fleet_factory: Callable[..., Fleet], tmp_path: Path) -> None:
    fleet = fleet_factory(1)
    options = fault_options(fleet, tmp_path)
    fleet.kill(0)
    error, elapsed = connect_error(fleet.nodes[0], options)
    assert error.reason == "refused"
    assert elapsed < 2


@pytest.mark.fleet
def test_listener_that_never_speaks_times_out_within_the_bound(
    fleet: Fleet, tmp_path: Path
) -> None:
    host, port = fleet.silent_listener()
    options = fault_options(fleet, tmp_path)
    node = Node(name="silent", host=host, port=port, user="edgetest")
    error, elapsed = connect_error(node, options)
    assert error.reason == "timeout"
    assert elapsed < options.connect_timeout + options.login_timeout + 2


@pytest.mark.fleet
def test_wrong_user_is_an_auth_failure(fleet: Fleet, tmp_path: Path) -> None:
    good = fleet.nodes[0]
    node = Node(name="wrong", host=good.host, port=good.port, user="nobody-here", key=good.key)
    error, _ = connect_error(node, fault_options(fleet, tmp_path))
    assert error.reason == "auth"
    assert "nobody-here" in str(error)


@pytest.mark.fleet
def test_unresolvable_name_is_a_dns_failure(fleet: Fleet, tmp_path: Path) -> None:
    node = Node(name="ghost", host="nonexistent.invalid", user="edgetest")
    error, elapsed = connect_error(node, fault_options(fleet, tmp_path))
    assert error.reason == "dns"
    assert elapsed < 1


def test_resolver_failures_map_to_dns() -> None:
    from edgectl.transport.hostkeys import HostKeyCheck
    from edgectl.transport.ssh import _map_connect_error

    node = Node(name="n", host="example.test")
    check = HostKeyCheck(ConnectOptions(known_hosts_path=Path("unused")))
    failure = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert _map_connect_error(failure, node, check).reason == "dns"


# -- the pool ---------------------------------------------------------------------------


async def _whoami(node: Node, conn: Connection) -> str:
    """One pool task: the remote user and the address the node was reached at."""
    result = await conn.run(["sh", "-c", 'echo "$(id -un) ${SSH_CONNECTION%% *}"'])
    return result.stdout_text.strip()


@pytest.mark.fleet
def test_pool_reuses_connections_across_rounds(fleet: Fleet, fleet_options: ConnectOptions) -> None:
    async def scenario() -> tuple[list[dict[str, str | TransportError]], int, bool]:
        async with ConnectionPool(fleet_options, forks=2) as pool:
            first = await pool.run_all(fleet.nodes, _whoami)
            conns = {n.name: await pool.connection(n) for n in fleet.nodes}
            second = await pool.run_all(fleet.nodes, _whoami)
            same = all([await pool.connection(n) is conns[n.name] for n in fleet.nodes])
            return [first, second], pool.opened, same

    rounds, opened, same = run(scenario())
    assert opened == len(fleet.nodes), "the second round opened new connections"
    assert same
    for results in rounds:
        assert sorted(results) == [n.name for n in fleet.nodes]
        assert all(
            isinstance(value, str) and value.startswith("edgetest ") for value in results.values()
        )


@pytest.mark.fleet
def test_run_all_reports_each_failure_while_the_others_succeed(
    fleet: Fleet, fleet_factory: Callable[..., Fleet], tmp_path: Path
) -> None:
    broken = fleet_factory(2)
    broken.kill(0)
    broken.stop(1)
    host, port = fleet.silent_listener()
    options = fault_options(fleet, tmp_path)
    broken.write_known_hosts(tmp_path / "broken_known_hosts")
    with options.known_hosts_path.open("a") as known:
        known.write((tmp_path / "broken_known_hosts").read_text())
    good = fleet.nodes[0]
    nodes = [
        *fleet.nodes,
        Node(name="dead", host=broken.nodes[0].host, port=broken.nodes[0].port),
        Node(name="hung", host=broken.nodes[1].host, port=broken.nodes[1].port),
        Node(name="silent", host=host, port=port),
        Node(name="wrong-user", host=good.host, port=good.port, user="nobody-here", key=good.key),
        Node(name="ghost", host="nonexistent.invalid"),
    ]

    async def failing(node: Node, conn: Connection) -> str:
        if node.name == fleet.nodes[-1].name:
            raise RuntimeError("parser bug")
        return await _whoami(node, conn)

    async def scenario() -> dict[str, str | TransportError]:
        async with ConnectionPool(options, forks=50, retry_backoff=0.05) as pool:
            return await pool.run_all(nodes, failing)

    start = time.monotonic()
    results = run(scenario())
    elapsed = time.monotonic() - start
    reasons = {k: v.reason for k, v in results.items() if isinstance(v, TransportError)}
    assert reasons == {
        fleet.nodes[-1].name: "error",
        "dead": "refused",
        "hung": "timeout",
        "silent": "timeout",
        "wrong-user": "auth",
        "ghost": "dns",
    }
    assert "parser bug" in str(results[fleet.nodes[-1].name])
    for node in fleet.nodes[:-1]:
        assert isinstance(results[node.name], str)
    assert elapsed < 2 * FAULT_TIMEOUT + 3, "one slow node held up the others"


def test_check_nofile_keeps_room_for_the_forks() -> None:
    assert check_nofile(10) >= 10 * 3 + 64


def test_importing_the_transport_does_not_import_asyncssh() -> None:
    code = "import sys, edgectl.transport; print('asyncssh' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


@pytest.mark.fleet
def test_pool_retries_connections_sshd_drops_at_max_startups(
    fleet_factory: Callable[..., Fleet], tmp_path: Path
) -> None:
    fleet = fleet_factory(1, max_startups=2)
    options = trusting_options(fleet, tmp_path)
    base = fleet.nodes[0]
    # Twelve names for one sshd: twelve handshakes at once, where sshd allows two.
    aliases = [
        Node(name=f"alias{i}", host=base.host, port=base.port, user=base.user, key=base.key)
        for i in range(12)
    ]

    async def burst() -> list[Connection | BaseException]:
        opened = await asyncio.gather(
            *(open_connection(n, options) for n in aliases), return_exceptions=True
        )
        for conn in opened:
            if isinstance(conn, Connection):
                await conn.close()
        return opened

    async def pooled() -> dict[str, int | TransportError | None]:
        async with ConnectionPool(options, forks=12, connect_retries=5, retry_backoff=0.1) as pool:
            return await pool.run_all(aliases, lambda node, conn: _exit_status(conn))

    drops = [e for e in run(burst()) if isinstance(e, TransportError)]
    assert drops and all(e.retryable for e in drops), "sshd dropped nothing: no test"
    assert run(pooled()) == {n.name: 0 for n in aliases}


async def _exit_status(conn: Connection) -> int | None:
    """The exit status of `true` on the node."""
    return (await conn.run(["true"])).exit_status


@pytest.mark.fleet
def test_fleet_password_option_enables_password_login_on_chosen_nodes(
    fleet_factory: Callable[..., Fleet],
) -> None:
    import asyncssh

    fleet = fleet_factory(2, password="fleet-test-pw", password_nodes=[0])

    async def login(node: Node) -> str:
        try:
            async with asyncssh.connect(
                node.host,
                port=node.port,
                username=node.user,
                password="fleet-test-pw",
                client_keys=None,
                agent_path=None,
                known_hosts=None,  # this test is about the fixture, not about host keys
                connect_timeout=5,
            ) as conn:
                return str((await conn.run("id -un")).stdout).strip()
        except asyncssh.PermissionDenied:
            return "denied"

    assert [run(login(n)) for n in fleet.nodes] == ["edgetest", "denied"]


# -- sessions: a command kept running that answers requests --------------------------------

ECHO_SESSION = (
    "while IFS= read -r x; do case $x in quit) exit 0 ;; slow) sleep 30 ;; big) yes | head -c 300000 ;; esac; "
    'echo "got $x"; echo end; done'
)


@pytest.mark.fleet
def test_session_answers_requests_until_it_ends(fleet: Fleet, tmp_path: Path) -> None:
    options = trusting_options(fleet, tmp_path)

    async def scenario() -> tuple[list[bytes], str, bool, bool]:
        async with connected(fleet.nodes[0], options) as conn:
            session = await conn.open_session(["sh", "-c", ECHO_SESSION])
            assert session is not None
            replies = [
                await session.exchange(f"{word}\n".encode(), b"end\n", max_output=1000)
                for word in ("a", "it's $HOME")
            ]
            with pytest.raises(TransportError) as ended:
                await session.exchange(b"quit\n", b"end\n", max_output=1000)
            return replies, ended.value.reason, session.is_closed, conn.is_closed

    replies, reason, session_closed, conn_closed = run(scenario())
    assert replies == [b"got a\nend\n", b"got it's $HOME\nend\n"]
    assert reason == "error" and session_closed and not conn_closed


@pytest.mark.fleet
def test_session_timeout_and_oversized_reply_end_the_session(fleet: Fleet, tmp_path: Path) -> None:
    options = trusting_options(fleet, tmp_path)

    async def scenario() -> tuple[str, float, bool, str, bool, bytes]:
        async with connected(fleet.nodes[0], options) as conn:
            slow = await conn.open_session(["sh", "-c", ECHO_SESSION])
            assert slow is not None
            started = time.monotonic()
            with pytest.raises(TransportError) as timed_out:
                await slow.exchange(b"slow\n", b"end\n", timeout=0.5, max_output=1000)
            elapsed = time.monotonic() - started
            big = await conn.open_session(["sh", "-c", ECHO_SESSION])
            assert big is not None
            with pytest.raises(TransportError) as oversized:
                await big.exchange(b"big\n", b"end\n", max_output=100_000)
            # The connection itself is fine: a new session answers.
            fresh = await conn.open_session(["sh", "-c", ECHO_SESSION])
            assert fresh is not None
            answer = await fresh.exchange(b"ok\n", b"end\n", max_output=1000)
            return (
                timed_out.value.reason,
                elapsed,
                slow.is_closed,
                oversized.value.reason,
                big.is_closed,
                answer,
            )

    reason, elapsed, slow_closed, big_reason, big_closed, answer = run(scenario())
    assert reason == "timeout" and elapsed < 0.5 + 2.0 and slow_closed
    assert big_reason == "error" and big_closed
    assert answer == b"got ok\nend\n"
