"""The one way edgectl reaches a node: SSH (asyncssh) or the local machine.

asyncssh is imported only when the first SSH connection is opened, so that importing this
package stays cheap for commands that never connect.
"""

from __future__ import annotations

import asyncio
import random
import resource
import warnings
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TypeVar

from edgectl.inventory.model import Node
from edgectl.transport.base import (
    Connection,
    ConnectOptions,
    Reason,
    RunResult,
    Session,
    TransportError,
)
from edgectl.transport.quoting import quote_argv

__all__ = [
    "ConnectOptions",
    "Connection",
    "ConnectionPool",
    "Reason",
    "RunResult",
    "Session",
    "TransportError",
    "check_nofile",
    "open_connection",
    "quote_argv",
]

T = TypeVar("T")

DEFAULT_FORKS = 100
FDS_PER_CONNECTION = 3  # socket + the odd channel/pipe; measured well under this
FDS_RESERVED = 64  # stdio, store files, logs
JITTER_PER_NODE = 0.002  # seconds of start spread per node, so sshd sees no burst
MAX_JITTER = 0.5
CONNECT_RETRIES = 2  # extra attempts after a drop during the handshake
RETRY_BACKOFF = 0.2  # seconds, doubled per attempt, randomised
# Handshakes in flight to one address (host, port) at once: sshd's stock MaxStartups
# starts dropping unauthenticated connections at 10, so many nodes behind one sshd (or
# one forwarded address) would lose a share of theirs however often they retried.
HANDSHAKES_PER_ADDRESS = 8


async def open_connection(node: Node, options: ConnectOptions) -> Connection:
    """Open a connection to node: local subprocesses or SSH, by node.connection."""
    if node.connection == "local":
        from edgectl.transport import local

        return await local.connect(node, options)
    from edgectl.transport import ssh

    return await ssh.connect(node, options)


def check_nofile(forks: int) -> int:
    """Make room for `forks` connections in RLIMIT_NOFILE (raise the soft limit, or warn)."""
    needed = forks * FDS_PER_CONNECTION + FDS_RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
        if soft < needed:
            warnings.warn(
                f"open-file limit {soft} is low for {forks} parallel connections "
                f"(want {needed}); lower --forks or raise `ulimit -n`",
                RuntimeWarning,
                stacklevel=2,
            )
    return soft


class ConnectionPool:
    """One reusable connection per node, at most `forks` of them busy at once."""

    def __init__(
        self,
        options: ConnectOptions,
        forks: int = DEFAULT_FORKS,
        *,
        connect_retries: int = CONNECT_RETRIES,
        retry_backoff: float = RETRY_BACKOFF,
    ) -> None:
        if forks < 1:
            raise ValueError("forks must be at least 1")
        self.options = options
        self.forks = forks
        self.connect_retries = connect_retries
        self.retry_backoff = retry_backoff
        self.opened = 0  # connections opened so far (reuse keeps this flat)
        self._limit = asyncio.Semaphore(forks)
        self._connections: dict[str, Connection] = {}
        self._node_locks: dict[str, asyncio.Lock] = {}
        self._handshakes: dict[tuple[str, int], asyncio.Semaphore] = {}
        check_nofile(forks)

    async def __aenter__(self) -> ConnectionPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def is_connected(self, node: Node) -> bool:
        """True when the pool holds a live connection to node."""
        conn = self._connections.get(node.name)
        return conn is not None and not conn.is_closed

    async def connection(self, node: Node) -> Connection:
        """The pooled connection to node, opened (with bounded retries) if needed."""
        lock = self._node_locks.setdefault(node.name, asyncio.Lock())
        async with lock:
            conn = self._connections.get(node.name)
            if conn is not None and not conn.is_closed:
                return conn
            conn = await self._open_with_retries(node)
            self._connections[node.name] = conn
            self.opened += 1
            return conn

    async def _open_with_retries(self, node: Node) -> Connection:
        """Open a connection, retrying drops during the handshake (sshd's MaxStartups)."""
        address = (node.host, node.port)
        slots = self._handshakes.setdefault(address, asyncio.Semaphore(HANDSHAKES_PER_ADDRESS))
        for attempt in range(self.connect_retries + 1):
            try:
                async with slots:
                    return await open_connection(node, self.options)
            except TransportError as exc:
                if not exc.retryable or attempt == self.connect_retries:
                    raise
            delay = self.retry_backoff * (2**attempt) * random.uniform(0.5, 1.5)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def discard(self, node: Node) -> None:
        """Close and forget node's connection (after it failed, or to start afresh)."""
        conn = self._connections.pop(node.name, None)
        if conn is not None:
            await conn.close()

    async def run_all(
        self,
        nodes: Iterable[Node],
        fn: Callable[[Node, Connection], Awaitable[T]],
        on_done: Callable[[str], None] | None = None,
    ) -> dict[str, T | TransportError]:
        """Run fn(node, connection) on every node; a node's failure never stops the others.

        `on_done(name)` is called as each node finishes, for progress displays.
        """
        chosen = list(nodes)
        names = [node.name for node in chosen]
        if len(set(names)) != len(names):
            raise ValueError("run_all got the same node name twice")
        spread = min(MAX_JITTER, JITTER_PER_NODE * len(chosen))

        async def one(node: Node) -> T | TransportError:
            outcome = await self._run_one(node, fn, spread)
            if on_done is not None:
                on_done(node.name)
            return outcome

        outcomes = await asyncio.gather(*(one(node) for node in chosen))
        return dict(zip(names, outcomes, strict=True))

    async def _run_one(
        self, node: Node, fn: Callable[[Node, Connection], Awaitable[T]], spread: float
    ) -> T | TransportError:
        """One node's share of run_all: jitter, connect, call, and catch."""
        if spread and not self.is_connected(node):
            await asyncio.sleep(random.uniform(0, spread))
        async with self._limit:
            try:
                conn = await self.connection(node)
                return await fn(node, conn)
            except TransportError as exc:
                conn_now = self._connections.get(node.name)
                if conn_now is not None and conn_now.is_closed:
                    await self.discard(node)
                return exc
            except Exception as exc:
                # A bug or a parse error in fn is this node's failure, not the fleet's.
                error = TransportError("error", f"{node.name}: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                return error

    async def close(self) -> None:
        """Close every pooled connection."""
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(conn.close() for conn in connections), return_exceptions=True)
