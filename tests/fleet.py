"""A fleet of real OpenSSH servers on loopback addresses, for integration tests.

Each node is its own `sshd -D` process with its own address (127.0.1.1, 127.0.1.2, ...),
port, host key and workdir. Faults are real: SIGSTOP for a hung node, SIGKILL for a
dead one, a restart with a new host key, a listener that accepts and never speaks.
Only the pids started here are ever signalled.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from edgectl.inventory.model import Node
from edgectl.transport.base import ConnectOptions

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
TEST_USER = "edgetest"
TEST_HOME = Path("/home") / TEST_USER
PRIVSEP_DIR = Path("/run/sshd")
READY_TIMEOUT = 10.0  # seconds for one batch of sshd to send their banners
STOP_TIMEOUT = 5.0
MAX_ADDRESSES = 200 * 254


def cannot_run_here(why: str) -> NoReturn:
    """Skip a test whose parts this machine lacks; in CI (EDGECTL_REQUIRE_FLEET, set by
    tests/run.sh, which installs every part) fail it instead: CI runs every test."""
    import pytest

    if os.environ.get("EDGECTL_REQUIRE_FLEET"):
        pytest.fail(f"required in CI but cannot run here: {why}")
    pytest.skip(why)


def loopback_address(index: int) -> str:
    """The index-th fleet address: 127.0.1.1 ... 127.0.1.254, then 127.0.2.1 ..."""
    if not 0 <= index < MAX_ADDRESSES:
        raise ValueError(f"no loopback address for fleet index {index}")
    return f"127.0.{1 + index // 254}.{1 + index % 254}"


def free_port(host: str) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _run(argv: list[str]) -> None:
    """Run a setup command, failing loudly with its output."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def ensure_test_user() -> str:
    """Create the unprivileged login user when root (idempotent); else log in as ourselves."""
    if os.geteuid() != 0:
        return getpass.getuser()
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        # No --create-home: /etc/skel would bring shell rc files the tests do not want.
        argv = ["useradd", "--no-create-home", "--home-dir", str(TEST_HOME), "--shell", "/bin/sh"]
        try:
            _run([*argv, TEST_USER])
        except RuntimeError:
            pwd.getpwnam(TEST_USER)  # another session created it meanwhile; else fail here
    # '*' = no password but not locked: sshd refuses pubkey logins to locked ('!') accounts.
    _run(["usermod", "--shell", "/bin/sh", "-p", "*", TEST_USER])
    entry = pwd.getpwnam(TEST_USER)
    TEST_HOME.mkdir(mode=0o755, exist_ok=True)
    os.chown(TEST_HOME, entry.pw_uid, entry.pw_gid)
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    return TEST_USER


def set_password(user: str, password: str | None) -> None:
    """Set the test user's password (root only); None puts back the no-password state."""
    if os.geteuid() != 0:
        raise RuntimeError("setting a login password needs root")
    if password is None:
        _run(["usermod", "-p", "*", user])
        return
    subprocess.run(
        ["chpasswd"],
        input=f"{user}:{password}\n",
        text=True,
        capture_output=True,
        timeout=30,
        check=True,
    )


def keygen(path: Path, comment: str) -> subprocess.Popen[bytes]:
    """Start ssh-keygen for a new ed25519 key without passphrase at `path`."""
    for stale in (path, path.with_suffix(".pub")):
        stale.unlink(missing_ok=True)
    return subprocess.Popen(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_keygens(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """Wait for ssh-keygen processes, raising if one failed."""
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh-keygen failed: {err.decode(errors='replace').strip()}")


def read_banner(host: str, port: int, timeout: float) -> bytes:
    """Connect and return the first bytes the server sends (b'' if none in time)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return sock.recv(64)
    except OSError:
        return b""


@dataclass
class SshdNode:
    """One sshd of the fleet: its files, its address and its process."""

    index: int
    host: str
    port: int
    directory: Path
    password_auth: bool
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def host_key(self) -> Path:
        """The private host key file."""
        return self.directory / "ssh_host_ed25519_key"

    @property
    def config(self) -> Path:
        """The sshd_config file."""
        return self.directory / "sshd_config"

    @property
    def log(self) -> Path:
        """sshd's stderr (it runs with -e)."""
        return self.directory / "sshd.log"

    @property
    def pid(self) -> int | None:
        """The pid of the listening sshd, or None when not running."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def public_key(self) -> str:
        """The host public key as 'type base64'."""
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"{kind} {blob}"


@dataclass
class FleetSession:
    """What the fleets of one test session share: user, client key, addresses."""

    base: Path
    user: str
    client_key: Path
    next_index: int = 0
    fleets: list[Fleet] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls) -> FleetSession:
        """Make the user, a world-readable base directory and one client key."""
        user = ensure_test_user()
        # Not pytest's tmp_path: it is 0700 root and the test user must reach its workdir.
        base = Path(tempfile.mkdtemp(prefix="edgectl-fleet-"))
        base.chmod(0o755)
        client_key = base / "client_ed25519"
        wait_keygens([keygen(client_key, "edgectl-test-client")])
        authorized = base / "authorized_keys"
        authorized.write_text(client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o644)
        return cls(base=base, user=user, client_key=client_key)

    def allocate(self, count: int) -> int:
        """Reserve `count` fleet addresses; return the first index."""
        with self._lock:
            first = self.next_index
            self.next_index += count
        return first

    def start(self, count: int, **options: object) -> Fleet:
        """Start a fleet of `count` nodes on fresh loopback addresses (see Fleet.start)."""
        fleet = Fleet(self, self.allocate(count), count)
        self.fleets.append(fleet)
        fleet.start(**options)  # type: ignore[arg-type]
        return fleet

    def close(self) -> None:
        """Stop every fleet still running and remove the files."""
        for fleet in self.fleets:
            fleet.close()
        self.fleets.clear()
        shutil.rmtree(self.base, ignore_errors=True)


class Fleet:
    """N sshd processes and the Node records that point at them."""

    def __init__(self, session: FleetSession, first_index: int, count: int) -> None:
        self.session = session
        self.first_index = first_index
        self.count = count
        self.directory = session.base / f"fleet-{first_index:05d}"
        self.sshd: list[SshdNode] = []
        self.nodes: list[Node] = []
        self.max_startups = "200"
        self.password: str | None = None
        self.listeners: list[socket.socket] = []
        self.closed = False

    # -- start and stop -------------------------------------------------------------------

    def start(
        self,
        max_startups: int | str = 200,
        password: str | None = None,
        password_nodes: Iterable[int] | None = None,
    ) -> None:
        """Start every sshd at once, then wait for all their banners.

        `password` sets the test user's login password and enables password logins on
        `password_nodes` (indices; default all nodes).
        """
        self.max_startups = str(max_startups)
        self.password = password
        with_password = set(range(self.count) if password_nodes is None else password_nodes)
        if password is not None:
            set_password(self.session.user, password)
        self.directory.mkdir(mode=0o755)
        uid_gid = self._user_ids()
        for offset in range(self.count):
            index = self.first_index + offset
            host = loopback_address(index)
            directory = self.directory / f"n{offset + 1:02d}"
            directory.mkdir(mode=0o755)
            workdir = directory / "work"
            workdir.mkdir(mode=0o755)
            if uid_gid is not None:
                os.chown(workdir, *uid_gid)
            self.sshd.append(
                SshdNode(
                    offset,
                    host,
                    free_port(host),
                    directory,
                    password is not None and offset in with_password,
                )
            )
            self.nodes.append(
                Node(
                    name=f"n{offset + 1:02d}",
                    host=host,
                    port=self.sshd[-1].port,
                    user=self.session.user,
                    key=str(self.session.client_key),
                    workdir=str(workdir),
                )
            )
        wait_keygens([keygen(s.host_key, f"edgectl-test-{s.host}") for s in self.sshd])
        for node in self.sshd:
            self._write_config(node)
            self._spawn(node)
        self._wait_ready(self.sshd)

    def _user_ids(self) -> tuple[int, int] | None:
        """uid and gid to own the workdirs, when running as root."""
        if os.geteuid() != 0:
            return None
        entry = pwd.getpwnam(self.session.user)
        return entry.pw_uid, entry.pw_gid

    def _write_config(self, node: SshdNode) -> None:
        """Write one node's sshd_config."""
        lines = [
            f"ListenAddress {node.host}:{node.port}",
            f"HostKey {node.host_key}",
            f"PidFile {node.directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.session.base / 'authorized_keys'}",
            # The key file lives under /tmp (world-writable): StrictModes would refuse it.
            "StrictModes no",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if node.password_auth else 'no'}",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "UseDNS no",
            f"MaxStartups {self.max_startups}",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
            f"AllowUsers {self.session.user}",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
        ]
        node.config.write_text("\n".join(lines) + "\n")

    def _spawn(self, node: SshdNode) -> None:
        """Start one sshd in the foreground (-D), logging to its file."""
        with node.log.open("ab") as log:
            node.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(node.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C at the terminal goes to pytest, not to sshd
            )
        node.stopped = False

    def _wait_ready(self, nodes: list[SshdNode]) -> None:
        """Poll every pending sshd until it sends its SSH banner (bounded in time)."""
        pending = list(nodes)
        deadline = time.monotonic() + READY_TIMEOUT + 0.02 * len(nodes)
        for _ in range(10_000):
            if not pending or time.monotonic() > deadline:
                break
            still = []
            for node in pending:
                assert node.proc is not None
                if node.proc.poll() is not None:
                    raise RuntimeError(
                        f"sshd for {node.host}:{node.port} exited with {node.proc.returncode}: "
                        f"{node.log.read_text(errors='replace').strip()[-500:]}"
                    )
                if not read_banner(node.host, node.port, 0.5).startswith(b"SSH-"):
                    still.append(node)
            pending = still
            if pending:
                time.sleep(0.02)
        if pending:
            names = ", ".join(f"{n.host}:{n.port}" for n in pending[:5])
            raise RuntimeError(f"{len(pending)} sshd not ready in time: {names}")

    def _terminate(self, node: SshdNode, sig: int = signal.SIGTERM) -> None:
        """Signal our own sshd (waking it first if stopped) and reap it."""
        proc = node.proc
        if proc is None or proc.poll() is not None:
            return
        if node.stopped:
            os.kill(proc.pid, signal.SIGCONT)
            node.stopped = False
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        """Stop every sshd and listener of this fleet; idempotent."""
        if self.closed:
            return
        self.closed = True
        for listener in self.listeners:
            listener.close()
        for node in self.sshd:
            self._terminate(node)
        if self.password is not None:
            set_password(self.session.user, None)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what tests read ------------------------------------------------------------------

    @property
    def pids(self) -> list[int | None]:
        """The pid of each listening sshd (None for one that is not running)."""
        return [node.pid for node in self.sshd]

    def known_hosts_lines(self, indices: Iterable[int] | None = None) -> list[str]:
        """OpenSSH known_hosts lines for the nodes (default all)."""
        chosen = range(self.count) if indices is None else indices
        return [
            f"[{self.sshd[i].host}]:{self.sshd[i].port} {self.sshd[i].public_key()}" for i in chosen
        ]

    def write_known_hosts(self, path: Path, indices: Iterable[int] | None = None) -> Path:
        """Write a known_hosts file trusting the nodes; return its path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in self.known_hosts_lines(indices)))
        return path

    # -- faults ---------------------------------------------------------------------------

    def stop(self, i: int) -> None:
        """SIGSTOP node i's sshd: connections are accepted by the kernel, nothing answers."""
        node = self.sshd[i]
        assert node.proc is not None and node.proc.poll() is None
        os.kill(node.proc.pid, signal.SIGSTOP)
        node.stopped = True

    def cont(self, i: int) -> None:
        """SIGCONT node i's sshd."""
        node = self.sshd[i]
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGCONT)
        node.stopped = False

    def kill(self, i: int) -> None:
        """SIGKILL node i's sshd: new connections are refused."""
        self._terminate(self.sshd[i], signal.SIGKILL)

    def restart(self, i: int, new_host_key: bool = False) -> None:
        """Stop node i's sshd and start it again on the same address, maybe with a new key."""
        node = self.sshd[i]
        self._terminate(node)
        if new_host_key:
            wait_keygens([keygen(node.host_key, f"edgectl-test-{node.host}-new")])
        self._spawn(node)
        self._wait_ready([node])

    def silent_listener(self, host: str = "127.0.250.1") -> tuple[str, int]:
        """Listen on host:port and accept connections (kernel backlog) without ever speaking."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host, 0))
        sock.listen(128)
        self.listeners.append(sock)
        return host, int(sock.getsockname()[1])


def trusting_options(fleet: Fleet, directory: Path, **overrides: object) -> ConnectOptions:
    """ConnectOptions whose edgectl known_hosts trusts every node of fleet; short timeouts."""
    known_hosts = fleet.write_known_hosts(directory / "known_hosts")
    settings: dict[str, object] = {
        "connect_timeout": 3.0,
        "login_timeout": 3.0,
        "command_timeout": 20.0,
        "user_known_hosts": None,  # the machine's own ~/.ssh/known_hosts stays out of tests
    }
    settings.update(overrides)
    return ConnectOptions(known_hosts_path=known_hosts, **settings)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_fleet(count: int, **options: object) -> Iterator[Fleet]:
    """A fleet outside pytest (benchmarks, manual runs): started, then stopped."""
    session = FleetSession.create()
    try:
        yield session.start(count, **options)
    finally:
        session.close()


def stale_static_facts(workdir: str, langs: Iterable[str]) -> Path:
    """Make a node's cache of static facts list other tesseract languages, yet stay valid.

    Every validity check the probe script makes still passes (same key, same mtime), so
    only a forced full probe can notice: this is how tests tell cached facts from fresh.
    """
    cache = Path(workdir) / ".edgectl-facts"
    stat = cache.stat()
    lines = [
        line for line in cache.read_text().splitlines() if not line.startswith("tesseract_lang=")
    ]
    end = lines.index("cache_end=1")
    lines[end:end] = [f"tesseract_lang={lang}" for lang in langs]
    cache.write_text("\n".join(lines) + "\n")
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return cache
