"""`inventory bootstrap`: one password login per node installs edgectl's key; then key-only.

The host key is recorded (trust on first use only with accept_new), the node's `key` set,
and a key-only login proven. The password is never stored, logged or put on a command line:
it goes from the caller's function into the transport's password login.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.errors import UsageError
from edgectl.inventory.model import Node, check_user
from edgectl.transport.base import ConnectOptions, TransportError

if TYPE_CHECKING:
    from edgectl.api import Fleet
    from edgectl.transport.base import RunResult
    from edgectl.transport.ssh import Login


INSTALL_KEY = r"""
umask 077
line=$1; blob=$2
dir=$HOME/.ssh; file=$dir/authorized_keys
[ -d "$dir" ] || mkdir -p "$dir" || exit 1
chmod 700 "$dir" 2>/dev/null
if [ -f "$file" ] && grep -qF -- "$blob" "$file"; then echo "present"; exit 0; fi
if [ -s "$file" ] && [ -n "$(tail -c 1 "$file")" ]; then echo >> "$file"; fi
printf '%s\n' "$line" >> "$file" || exit 1
chmod 600 "$file" 2>/dev/null
echo "installed"
"""


@dataclass
class BootstrapResult:
    """One node's bootstrap: key installed, already present, or failed (why)."""

    name: str
    status: str  # installed | present | failed
    reason: str | None = None  # for failures: the transport's reason (auth, timeout, ...)
    error: str | None = None
    steps: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when a key-only login works now."""
        return self.status in ("installed", "present")

    def to_dict(self) -> dict[str, Any]:
        """The --json shape."""
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "steps": list(self.steps),
        }


async def _login_run(
    node: Node, options: ConnectOptions, login: Login, argv: list[str]
) -> RunResult:
    """One command over a connection made with exactly this credential."""
    from edgectl.transport.ssh import connect

    conn = await connect(node, options, login)
    try:
        return await conn.run(argv)
    finally:
        await conn.close()


async def key_login(node: Node, key_path: Path, options: ConnectOptions) -> None:
    """Log in with key_path only and run `true`; raise TransportError when that fails."""
    from edgectl.transport.ssh import Login

    result = await _login_run(node, options, Login(key=key_path), ["true"])
    if result.exit_status != 0:
        detail = result.stderr_text.strip()
        raise TransportError("error", f"{node.name}: a session after key login failed: {detail}")


async def install_key(node: Node, password: str, public_line: str, options: ConnectOptions) -> str:
    """Log in by password and add the public key to ~/.ssh/authorized_keys once.

    Returns 'installed' or 'present'.
    """
    from edgectl.transport.ssh import Login

    blob = public_line.split()[1]
    argv = ["sh", "-c", INSTALL_KEY, "edgectl", public_line, blob]
    result = await _login_run(node, options, Login(password=password), argv)
    state = result.stdout_text.strip().splitlines()[-1:] or [""]
    if result.exit_status != 0 or state[0] not in ("installed", "present"):
        detail = (result.stderr_text.strip().splitlines() or [f"exit {result.exit_status}"])[-1]
        raise TransportError("error", f"{node.name}: installing the key failed: {detail}")
    return state[0]


def bootstrap(
    fleet: Fleet,
    selector: str,
    password: Callable[[], str],
    *,
    user: str | None = None,
    accept_new: bool = False,
    timeout: float = 10.0,
    forks: int = 50,
) -> list[BootstrapResult]:
    """Install edgectl's key on the selected nodes; set their `key`; prove key-only login.

    Nodes where the key works already need no password; `password()` is called at most
    once, and only when some node needs it.
    """
    if user is not None:
        check_user(user)
    nodes = [replace(n, user=user) if user else n for n in fleet.nodes(selector)]
    local = [n.name for n in nodes if n.connection != "ssh"]
    if local:
        raise UsageError(f"bootstrap is for SSH nodes: {', '.join(local)} is local")
    from edgectl.transport.keys import ensure_key

    key_path, public_line = ensure_key(fleet.home)
    options = fleet.connect_options(timeout, accept_new)
    results = asyncio.run(_bootstrap_all(nodes, key_path, public_line, options, password, forks))
    done = {r.name for r in results if r.ok}

    def point_at_key(node: Node) -> None:
        node.key = str(key_path)
        if user:
            node.user = user

    if done:
        fleet.inventory.update_many([n.name for n in nodes if n.name in done], point_at_key)
    return results


async def _bootstrap_all(
    nodes: Sequence[Node],
    key_path: Path,
    public_line: str,
    options: ConnectOptions,
    password: Callable[[], str],
    forks: int,
) -> list[BootstrapResult]:
    """Key-only first everywhere; then one password for the nodes that need it."""
    limit = asyncio.Semaphore(max(1, forks))
    results = {n.name: BootstrapResult(n.name, "failed") for n in nodes}

    async def try_key(node: Node) -> bool:
        async with limit:
            try:
                await key_login(node, key_path, options)
            except TransportError as exc:
                if exc.reason == "auth":
                    return True  # needs the password
                _fail(results[node.name], exc)
                return False
            results[node.name].status = "present"
            results[node.name].steps.append("key login works already")
            return False

    async def with_password(node: Node, secret: str) -> None:
        result = results[node.name]
        async with limit:
            try:
                state = await install_key(node, secret, public_line, options)
                result.steps.append(f"key {state} by password login")
                await key_login(node, key_path, options)
            except TransportError as exc:
                _fail(result, exc)
                return
        result.status = "installed"
        result.steps.append("key-only login verified")

    needs = await asyncio.gather(*(try_key(n) for n in nodes))
    pending = [n for n, need in zip(nodes, needs, strict=True) if need]
    if pending:
        secret = password()
        await asyncio.gather(*(with_password(n, secret) for n in pending))
        del secret
    return [results[n.name] for n in nodes]


def _fail(result: BootstrapResult, exc: TransportError) -> None:
    result.status = "failed"
    result.reason = exc.reason
    result.error = str(exc)
