"""SSH connections with asyncssh: host keys enforced, every step under a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncssh

from edgectl.inventory.model import Node
from edgectl.transport.base import (
    CLOSE_GRACE,
    READ_CHUNK,
    Connection,
    ConnectOptions,
    MiB,
    RunResult,
    Session,
    TransportError,
    bounded,
    collect_output,
    feed_stdin,
    script_command,
    with_timeout,
)
from edgectl.transport.hostkeys import HostKeyCheck, host_pattern
from edgectl.transport.quoting import quote_argv

KEEPALIVE_COUNT_MAX = 3
SFTP_CHUNK = 4 * MiB

# Loaded client keys by path, with the (mtime, size, inode) of the key and its certificate:
# asyncssh would read and parse the file again for every connection of a 1,000-node round.
_client_keys: dict[str, tuple[tuple[object, ...], list[asyncssh.SSHKeyPair]]] = {}


def _stamp(path: str) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or edited; None when it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def client_keys(path: str) -> list[asyncssh.SSHKeyPair]:
    """The key pair at path (with its `-cert.pub`, if any), loaded once until it changes."""
    full = os.path.expanduser(path)
    stamp = (_stamp(full), _stamp(full + "-cert.pub"))
    if stamp[0] is None:
        raise FileNotFoundError(2, "No such file or directory", full)
    cached = _client_keys.get(full)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    pairs = list(asyncssh.load_keypairs(full))
    _client_keys[full] = (stamp, pairs)
    return pairs


@dataclass(frozen=True)
class Login:
    """A login that proves one thing only: this password, or this one key.

    For onboarding: no agent, no default keys, no GSS, so that the outcome says whether
    exactly this credential works. The password goes straight to asyncssh, never to a log.
    """

    password: str | None = field(default=None, repr=False)
    key: Path | None = None


class _Client(asyncssh.SSHClient):
    """Hands host-key decisions to a HostKeyCheck and notes when the connection drops."""

    def __init__(self, check: HostKeyCheck) -> None:
        self.check = check
        self.lost = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        """Called by asyncssh for a key that no known_hosts line trusts."""
        return self.check.validate(host, addr, port, key)

    def connection_lost(self, exc: Exception | None) -> None:
        """Remember the loss so a pool does not hand this connection out again."""
        self.lost = True


def _connect_arguments(
    node: Node, options: ConnectOptions, client: _Client, login: Login | None = None
) -> dict[str, Any]:
    """The keyword arguments of asyncssh.connect for one node."""
    arguments: dict[str, Any] = {
        "host": node.host,
        "port": node.port,
        # Always explicit and never None: a `UserKnownHostsFile none` or a
        # `StrictHostKeyChecking no` in ~/.ssh/config must not switch checking off.
        "known_hosts": cast(Any, client.check.known_hosts),
        "client_factory": lambda: client,
        # asyncssh's connect_timeout spans TCP connect, handshake and login.
        "connect_timeout": options.connect_timeout + options.login_timeout,
        "login_timeout": options.login_timeout,
        "keepalive_interval": options.keepalive_interval,
        "keepalive_count_max": KEEPALIVE_COUNT_MAX,
    }
    if node.user:
        arguments["username"] = node.user
    if node.key and login is None:
        arguments["client_keys"] = client_keys(node.key)
    if login is not None:
        arguments.update(agent_path=None, gss_auth=False)
        if login.password is not None:
            arguments.update(
                client_keys=None,
                password=login.password,
                preferred_auth="password,keyboard-interactive",
            )
        else:
            arguments.update(client_keys=[str(login.key)], preferred_auth="publickey")
    return arguments


def _map_connect_error(exc: BaseException, node: Node, check: HostKeyCheck) -> TransportError:
    """Translate whatever asyncssh or the OS raised while connecting into one reason."""
    where = f"{node.name} ({host_pattern(node.host, node.port)})"
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if check.failure is not None:
            return check.failure
        return TransportError("hostkey-changed", f"{where}: host key refused: {exc.reason}")
    if isinstance(exc, asyncssh.PermissionDenied):
        user = node.user or "(default user)"
        return TransportError("auth", f"{where}: permission denied for user {user}")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return TransportError("timeout", f"{where}: no SSH login within the connect timeout")
    if isinstance(exc, asyncssh.ConnectionLost) and "timeout" in exc.reason.lower():
        return TransportError("timeout", f"{where}: no SSH login within the login timeout")
    if isinstance(exc, socket.gaierror):
        return TransportError("dns", f"{where}: cannot resolve {node.host}: {exc.strerror}")
    if isinstance(exc, ConnectionRefusedError):
        return TransportError("refused", f"{where}: connection refused", retryable=True)
    if isinstance(exc, (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError)):
        # sshd drops connections over its MaxStartups right after accepting them.
        return TransportError(
            "error", f"{where}: connection closed during the SSH handshake", retryable=True
        )
    if isinstance(exc, asyncssh.DisconnectError):
        return TransportError("error", f"{where}: {exc.reason}")
    if isinstance(exc, OSError):
        about = f" ({exc.filename})" if exc.filename else ""  # e.g. a missing key file
        return TransportError("error", f"{where}: {exc.strerror or exc}{about}")
    return TransportError("error", f"{where}: {type(exc).__name__}: {exc}")


def never_resolves(host: str) -> bool:
    """True for names under the special-use domain `invalid` (RFC 6761): no lookup needed."""
    return host.rstrip(".").lower().rsplit(".", 1)[-1] == "invalid"


async def connect(node: Node, options: ConnectOptions, login: Login | None = None) -> SSHConnection:
    """Open an SSH connection to node, enforcing the host-key policy and all timeouts.

    `login` replaces the usual credentials (agent, ssh config, the node's key) by one.
    """
    if never_resolves(node.host):
        # RFC 6761 asks resolvers to answer NXDOMAIN for these at once: do so, no query sent.
        raise TransportError("dns", f"{node.name}: cannot resolve {node.host}: reserved name")
    check = HostKeyCheck.load(options)
    client = _Client(check)
    budget = options.connect_timeout + options.login_timeout
    try:
        # The outer wait_for is a backstop should asyncssh's own timers not fire.
        conn = await bounded(
            asyncssh.connect(**_connect_arguments(node, options, client, login)), budget + 1.0
        )
    except asyncio.CancelledError:
        raise
    except asyncssh.PermissionDenied as exc:
        # The key exchange, which proves the host key, completed before authentication.
        check.record_accepted()
        raise _map_connect_error(exc, node, check) from None
    except (Exception, asyncio.TimeoutError) as exc:
        raise _map_connect_error(exc, node, check) from None
    try:
        check.record_accepted()
    except BaseException:
        conn.close()
        raise
    return SSHConnection(node, options, conn, client)


def sftp_path(remote: str) -> str:
    """A path for SFTP, which starts in the home directory and does not expand '~'."""
    if remote == "~":
        return "."
    if remote.startswith("~/"):
        return remote[2:] or "."
    if remote.startswith("~"):
        raise ValueError(f"'~user' paths are not supported: {remote!r}")
    return remote


def _quiet_lost_reads(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Drop "never retrieved" errors of SFTP reads cut off with their channel."""
    lost = isinstance(
        context.get("exception"), asyncssh.SFTPConnectionLost | asyncssh.ConnectionLost
    )
    if not (lost and "never retrieved" in str(context.get("message", ""))):
        loop.default_exception_handler(context)


class SSHConnection(Connection):
    """One asyncssh connection to one node."""

    def __init__(
        self,
        node: Node,
        options: ConnectOptions,
        conn: asyncssh.SSHClientConnection,
        client: _Client,
    ) -> None:
        self.node_name = node.name
        self.node = node
        self.options = options
        self._conn = conn
        self._client = client

    @property
    def is_closed(self) -> bool:
        """True once the connection is closed or lost."""
        return self._client.lost

    async def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        script: str | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
        max_output: int | None = None,
    ) -> RunResult:
        """Run argv (quoted) or a POSIX sh script (sent on stdin to `sh -s`) on the node."""
        command_argv, data = script_command(argv, script, stdin)
        command = quote_argv(command_argv)
        limit = self.options.command_timeout if timeout is None else timeout
        cap = self.options.max_output if max_output is None else max_output
        shown = command if len(command) <= 60 else command[:57] + "..."
        return await with_timeout(
            self._run(command, data, cap), limit, f"{self.node_name}: command {shown!r}"
        )

    async def _run(self, command: str, data: bytes | None, cap: int) -> RunResult:
        """Start the command, feed stdin, read both streams under the cap, wait for status."""
        start = time.monotonic()
        try:
            process = await self._conn.create_process(command, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, "cannot start a command") from None
        finished = False
        try:
            stdin = process.stdin
            out, err, truncated = await collect_output(
                process.stdout.read,
                process.stderr.read,
                feed_stdin(stdin.write, stdin.drain, stdin.write_eof, data),
                cap,
                lambda: _abort(process),
            )
            if not truncated:
                await process.wait_closed()
            finished = True
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, "connection lost while running a command") from None
        finally:
            if not finished:
                _abort(process)  # timeout or cancellation: do not leave the command running
        if truncated:
            with contextlib.suppress(asyncio.TimeoutError, asyncssh.Error, OSError):
                await asyncio.wait_for(process.wait_closed(), CLOSE_GRACE)
        status = None if truncated else process.exit_status
        if status is not None and status < 0:
            status = None  # killed by a signal: asyncssh reports -1
        return RunResult(status, out, err, time.monotonic() - start, truncated)

    async def open_session(self, argv: Sequence[str]) -> SSHSession:
        """Start argv on the node as a long-running session (see Session)."""
        try:
            process = await with_timeout(
                self._conn.create_process(quote_argv(argv), encoding=None),
                self.options.command_timeout,
                f"{self.node_name}: session start",
            )
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, "cannot start a session") from None
        return SSHSession(self, process)

    def _lost(self, exc: BaseException, what: str) -> TransportError:
        """A TransportError for a failure of the connection itself."""
        detail = exc.reason if isinstance(exc, asyncssh.Error) else str(exc)
        return TransportError("error", f"{self.node_name}: {what}: {detail}")

    async def put(self, local: Path, remote: str, *, timeout: float | None = None) -> None:
        """Copy one local file to a path on the node (relative paths start in the home)."""
        limit = self.options.command_timeout if timeout is None else timeout
        try:
            await with_timeout(
                self._put(local, sftp_path(remote)), limit, f"{self.node_name}: upload to {remote}"
            )
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"upload to {remote} failed") from None

    async def _put(self, local: Path, path: str) -> None:
        """Upload over a fresh SFTP channel."""
        async with self._conn.start_sftp_client() as sftp:
            await sftp.put(str(local), path)

    async def get(
        self, remote: str, local: Path, max_size: int, *, timeout: float | None = None
    ) -> int:
        """Copy one regular file from the node, refusing one over max_size; return its size."""
        limit = self.options.command_timeout if timeout is None else timeout
        try:
            return await with_timeout(
                self._get(sftp_path(remote), remote, local, max_size),
                limit,
                f"{self.node_name}: download of {remote}",
            )
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"download of {remote} failed") from None

    async def _get(self, path: str, shown: str, local: Path, max_size: int) -> int:
        """Download over a fresh SFTP channel."""
        sftp = await self._conn.start_sftp_client()
        try:
            return await self._download(sftp, path, shown, local, max_size)
        except BaseException:
            # The reads in flight end with the channel; what they raise is not news.
            loop = asyncio.get_running_loop()
            if loop.get_exception_handler() is None:
                loop.set_exception_handler(_quiet_lost_reads)
            raise
        finally:
            # Closed without waiting for the node: a stalled one would hold a timed-out
            # download here until the connection's keepalive gave up on it.
            sftp.exit()

    async def _download(
        self, sftp: asyncssh.SFTPClient, path: str, shown: str, local: Path, max_size: int
    ) -> int:
        """Stream a remote file into a temp file beside `local`, then rename it into place."""
        attrs = await sftp.lstat(path)  # a symlink is refused, not followed
        if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
            raise TransportError("error", f"{self.node_name}: {shown} is not a regular file")
        if attrs.size is not None and attrs.size > max_size:
            raise TransportError(
                "error", f"{self.node_name}: {shown} is {attrs.size} bytes, over {max_size}"
            )
        fd, temp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                # Not closed on failure: the channel's exit (see _get) ends it, unwaited.
                remote_file = await sftp.open(path, "rb")
                # Bounded: each pass adds at least one byte, and we stop past max_size.
                while chunk := cast(bytes, await remote_file.read(SFTP_CHUNK)):
                    size += len(chunk)
                    if size > max_size:
                        raise TransportError(
                            "error", f"{self.node_name}: {shown} grew over {max_size} bytes"
                        )
                    out.write(chunk)
                await remote_file.close()
            os.replace(temp, local)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return size

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._conn.close()
        with contextlib.suppress(asyncio.TimeoutError, asyncssh.Error, OSError):
            await bounded(self._conn.wait_closed(), CLOSE_GRACE)
        self._client.lost = True


class SSHSession(Session):
    """A command on one SSH channel that reads requests on stdin and answers on stdout."""

    def __init__(self, conn: SSHConnection, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._conn = conn
        self._process = process
        self._closed = False

    @property
    def is_closed(self) -> bool:
        """True once ended, or when the connection is gone."""
        return self._closed or self._conn.is_closed

    async def exchange(
        self, request: bytes, end: bytes, *, timeout: float | None = None, max_output: int
    ) -> bytes:
        """Send a request; return the reply, which ends with `end`. Any failure ends the session."""
        name = self._conn.node_name
        if self.is_closed:
            raise TransportError("error", f"{name}: session already ended")
        limit = self._conn.options.command_timeout if timeout is None else timeout
        try:
            return await with_timeout(
                self._exchange(request, end, max_output), limit, f"{name}: session request"
            )
        except (asyncssh.Error, OSError) as exc:
            self._end()
            raise self._conn._lost(exc, "session lost") from None
        except BaseException:
            # A reply not read to its end leaves the session out of step: never reuse it.
            self._end()
            raise

    async def _exchange(self, request: bytes, end: bytes, cap: int) -> bytes:
        """Write the request, then read until the reply ends with `end` (at most cap bytes)."""
        self._process.stdin.write(request)
        reply = b""
        # Each pass reads at least one byte or ends, so it is bounded by cap; and in time
        # by the caller.
        while not reply.endswith(end):
            chunk = await self._process.stdout.read(READ_CHUNK)
            if not chunk:
                raise TransportError("error", f"{self._conn.node_name}: session ended early")
            reply += chunk
            if len(reply) > cap:
                raise TransportError(
                    "error", f"{self._conn.node_name}: session reply over {cap} bytes"
                )
        return reply

    def _end(self) -> None:
        if not self._closed:
            self._closed = True
            _abort(self._process)

    async def close(self) -> None:
        """End the remote command (closing its stdin ends a well-behaved one)."""
        self._end()


def _abort(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """Kill the remote command (if sshd honours signals) and close its channel."""
    with contextlib.suppress(asyncssh.Error, OSError):
        process.kill()
    # Closing the channel closes the command's pipes: a writer dies of SIGPIPE.
    process.close()
