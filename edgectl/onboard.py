"""Bulk onboarding: find SSH servers in an address range, then install edgectl's key on them.

    discover   addresses -> the (host, port) pairs that answer with an SSH banner
    bootstrap  one password login per node -> edgectl's public key in ~/.ssh/authorized_keys,
               the host key recorded (trust on first use only with accept_new), the node's
               `key` set, and a key-only login proven

Only the addresses given are contacted, concurrently and bounded (a semaphore, a timeout
per address, a cap on the range). The password is never stored, logged or put on a command
line: it goes from the caller's function straight into asyncssh's password authentication.
asyncssh is imported when a connection is first made, as in the transport; the host-key
decision is the transport's own HostKeyCheck, so checking is identical.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgectl.errors import UsageError
from edgectl.inventory.model import DEFAULT_PORT, Node, check_name, check_port, check_user
from edgectl.transport.base import ConnectOptions, TransportError
from edgectl.transport.hostkeys import HostKeyCheck, host_pattern
from edgectl.transport.quoting import quote_argv

if TYPE_CHECKING:
    from edgectl.api import Fleet

MAX_ADDRESSES = 65_536  # a /16: a larger range is almost surely a typo
MAX_PORTS = 16
DEFAULT_CONCURRENCY = 256
DEFAULT_SCAN_TIMEOUT = 2.0
BANNER_LINES = 20  # RFC 4253 lets a server send other lines before its version line
BANNER_LINE_MAX = 255
KEY_FILE = "id_ed25519"

# --------------------------------------------------------------------------- discover


@dataclass(frozen=True)
class Target:
    """One address and port to knock on."""

    host: str
    port: int


@dataclass
class Discovered:
    """An SSH server that answered, and what became of it in the inventory."""

    host: str
    port: int
    banner: str
    name: str  # the generated node name
    state: str = "found"  # found | added | known (already in the inventory) | taken (name used)
    known_as: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The --json shape."""
        return {
            "host": self.host,
            "port": self.port,
            "banner": self.banner,
            "name": self.name,
            "state": self.state,
            "known_as": self.known_as,
        }


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        raise UsageError(
            f"{text.strip()!r} is not an IP address (give addresses, a CIDR like "
            "10.0.0.0/24, or a range like 10.0.0.5-10.0.0.40 or 127.0.1.1-20)"
        ) from None


def _range(start_text: str, end_text: str) -> tuple[int, int, int]:
    """(version, first, last) of `a-b`, where b is a full address or a last IPv4 octet."""
    start = _address(start_text)
    end: ipaddress.IPv4Address | ipaddress.IPv6Address
    if end_text.strip().isdigit() and start.version == 4:
        octet = int(end_text)
        if not 0 <= octet <= 255:
            raise UsageError(f"range end {end_text!r} is not an octet (0-255)")
        end = ipaddress.IPv4Address((int(start) & 0xFFFFFF00) | octet)
    else:
        end = _address(end_text)
    if end.version != start.version or int(end) < int(start):
        raise UsageError(f"range {start_text}-{end_text} ends before it starts")
    return start.version, int(start), int(end)


def _split_port(term: str) -> tuple[str, int | None]:
    """`addr:port` and `[v6]:port` into address and port; anything else has no port."""
    if term.startswith("[") and "]:" in term:
        host, _, port = term[1:].partition("]:")
        return host, check_port(port)
    if term.count(":") == 1 and "/" not in term:
        host, _, port = term.partition(":")
        return host, check_port(port)
    return term, None


def expand_range(spec: str, ports: Sequence[int], limit: int = MAX_ADDRESSES) -> list[Target]:
    """Targets of a spec: comma-separated addresses, `addr:port`, CIDRs and `a-b` ranges.

    An address with its own port is knocked on that port only; others on every port given.
    More than `limit` addresses is refused before any is listed.
    """
    if not ports:
        raise UsageError("give at least one port")
    if len(ports) > MAX_PORTS:
        raise UsageError(f"at most {MAX_PORTS} ports")
    blocks: list[tuple[int, int, int, int | None]] = []  # version, first, last, port
    count = 0
    for raw in spec.split(","):
        term = raw.strip()
        if not term:
            continue
        term, port = _split_port(term)
        if "/" in term:
            try:
                network = ipaddress.ip_network(term, strict=False)
            except ValueError:
                raise UsageError(f"{term!r} is not a CIDR network") from None
            first, last = int(network.network_address), int(network.broadcast_address)
            if network.version == 4 and network.prefixlen < 31:
                first, last = first + 1, last - 1  # not the network and broadcast addresses
            blocks.append((network.version, first, last, port))
        elif "-" in term:
            start, _, end = term.partition("-")
            version, first, last = _range(start, end)
            blocks.append((version, first, last, port))
        else:
            address = _address(term)
            blocks.append((address.version, int(address), int(address), port))
        count += blocks[-1][2] - blocks[-1][1] + 1
        if count > limit:
            raise UsageError(f"the range holds over {limit} addresses: split it up")
    targets: list[Target] = []
    seen: set[Target] = set()
    for version, first, last, port in blocks:
        build = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        for number in range(first, last + 1):
            host = str(build(number))
            for each in [port] if port is not None else ports:
                target = Target(host, each)
                if target not in seen:
                    seen.add(target)
                    targets.append(target)
    return targets


def read_targets(range_or_file: str, ports: Sequence[int]) -> list[Target]:
    """Targets from a spec, or from a file of them (one or more per line, # comments)."""
    path = Path(range_or_file).expanduser()
    if "/" in range_or_file and not path.is_file() and not _looks_like_cidr(range_or_file):
        raise UsageError(f"no such file: {range_or_file}")
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        terms = []
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            terms.extend(line.replace(",", " ").split())
        return expand_range(",".join(terms), ports)
    return expand_range(range_or_file, ports)


def _looks_like_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text.split(",")[0].strip(), strict=False)
    except ValueError:
        return False
    return True


def node_name(host: str, port: int) -> str:
    """`node-10-0-0-5`, with `-p2222` when the port is not 22."""
    name = "node-" + host.replace(".", "-").replace(":", "-")
    if port != DEFAULT_PORT:
        name += f"-p{port}"
    return check_name(name)


def _clean_banner(line: bytes) -> str:
    text = line.decode("ascii", errors="replace").rstrip("\r\n")
    return "".join(ch for ch in text if ch.isprintable())[:BANNER_LINE_MAX]


async def read_banner(host: str, port: int, timeout: float) -> str | None:
    """The server's `SSH-...` version line, or None (refused, silent, or not SSH)."""

    async def knock() -> str | None:
        reader, writer = await asyncio.open_connection(host, port, limit=4096)
        try:
            for _ in range(BANNER_LINES):
                line = await reader.readline()
                if not line:
                    return None
                if line.startswith(b"SSH-"):
                    return _clean_banner(line)
            return None
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    try:
        return await asyncio.wait_for(knock(), timeout)
    except (OSError, asyncio.TimeoutError, ValueError, asyncio.IncompleteReadError):
        return None


async def scan(
    targets: Sequence[Target],
    timeout: float = DEFAULT_SCAN_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[tuple[Target, str]]:
    """Knock on every target, at most `concurrency` at once; those that spoke SSH, in order."""
    from edgectl.transport import check_nofile

    if concurrency < 1:
        raise UsageError("concurrency must be at least 1")
    check_nofile(concurrency)
    limit = asyncio.Semaphore(concurrency)

    async def one(target: Target) -> str | None:
        async with limit:
            return await read_banner(target.host, target.port, timeout)

    banners = await asyncio.gather(*(one(t) for t in targets))
    return [(t, b) for t, b in zip(targets, banners, strict=True) if b is not None]


def discover(
    fleet: Fleet,
    range_or_file: str,
    ports: Sequence[int] = (DEFAULT_PORT,),
    *,
    timeout: float = DEFAULT_SCAN_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
    add: bool = False,
    group: str | None = None,
    user: str | None = None,
) -> list[Discovered]:
    """Find SSH servers in a range; with `add`, put the new ones in the inventory (one write)."""
    targets = read_targets(range_or_file, [check_port(p) for p in ports])
    if group is not None:
        check_name(group, "group name")
    if user is not None:
        check_user(user)
    answered = asyncio.run(scan(targets, timeout, concurrency))
    existing = {(n.host, n.port): n.name for n in fleet.inventory.nodes()}
    taken = set(existing.values())
    found = []
    fresh: list[Node] = []
    for target, banner in answered:
        item = Discovered(target.host, target.port, banner, node_name(target.host, target.port))
        if (target.host, target.port) in existing:
            item.state, item.known_as = "known", existing[(target.host, target.port)]
        elif add and item.name in taken:
            item.state = "taken"
        elif add:
            groups = [group] if group else []
            fresh.append(Node(item.name, target.host, target.port, user=user, groups=groups))
            item.state = "added"
            taken.add(item.name)
        found.append(item)
    if fresh:
        fleet.add_nodes(fresh)
    return found


# --------------------------------------------------------------------------- bootstrap

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


def ensure_key(home: Path) -> tuple[Path, str]:
    """edgectl's ed25519 key pair in home (made on first use, mode 0600); (path, public line)."""
    import asyncssh  # noqa: TID251 - key generation, as the transport's own library

    private = home / KEY_FILE
    public = home / f"{KEY_FILE}.pub"
    home.mkdir(parents=True, exist_ok=True)
    if not private.exists():
        key = asyncssh.generate_private_key(
            "ssh-ed25519", comment=f"edgectl@{socket.gethostname()}"
        )
        _write_new(private, key.export_private_key("openssh"), 0o600)
    os.chmod(private, 0o600)
    key = asyncssh.read_private_key(str(private))
    line = key.export_public_key("openssh").decode().strip()
    if not public.exists() or public.read_text().strip() != line:
        _write_new(public, (line + "\n").encode(), 0o644, replace_existing=True)
    return private, line


def _write_new(path: Path, data: bytes, mode: int, replace_existing: bool = False) -> None:
    """Write a file via a temp file: linked in place (first writer wins) or renamed over."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        if replace_existing:
            os.replace(temp, path)
            return
        with contextlib.suppress(FileExistsError):  # another edgectl made it meanwhile
            os.link(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


@cache
def _client_class() -> type:
    """An asyncssh client that hands host-key decisions to the transport's HostKeyCheck."""
    import asyncssh  # noqa: TID251

    class HostKeyClient(asyncssh.SSHClient):
        def __init__(self, check: HostKeyCheck) -> None:
            self.check = check

        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            return self.check.validate(host, addr, port, key)

    return HostKeyClient


async def _connect(
    node: Node,
    options: ConnectOptions,
    *,
    password: str | None = None,
    key_path: Path | None = None,
) -> Any:
    """An asyncssh connection by password or by one key only, host keys checked as always."""
    import asyncssh  # noqa: TID251

    check = HostKeyCheck.load(options)
    client = _client_class()(check)
    arguments: dict[str, Any] = {
        "host": node.host,
        "port": node.port,
        "known_hosts": cast(Any, check.known_hosts),
        "client_factory": lambda: client,
        "connect_timeout": options.connect_timeout + options.login_timeout,
        "login_timeout": options.login_timeout,
        "agent_path": None,  # prove this key or this password, nothing else
        "gss_auth": False,
    }
    if node.user:
        arguments["username"] = node.user
    if password is not None:
        arguments.update(
            client_keys=None, password=password, preferred_auth="password,keyboard-interactive"
        )
    else:
        arguments.update(client_keys=[str(key_path)], preferred_auth="publickey")
    where = f"{node.name} ({host_pattern(node.host, node.port)})"
    budget = options.connect_timeout + options.login_timeout + 1.0
    try:
        conn = await asyncio.wait_for(asyncssh.connect(**arguments), budget)
    except asyncssh.PermissionDenied:
        check.record_accepted()  # the key exchange proved the host key before auth failed
        how = "password" if password is not None else f"key {key_path}"
        user = node.user or "(default user)"
        raise TransportError("auth", f"{where}: permission denied for {user} by {how}") from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise check.failure or TransportError("hostkey-changed", f"{where}: {exc.reason}") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise TransportError("timeout", f"{where}: no SSH login in time") from None
    except ConnectionRefusedError:
        raise TransportError("refused", f"{where}: connection refused") from None
    except asyncssh.Error as exc:
        raise TransportError("error", f"{where}: {exc.reason}") from None
    except OSError as exc:
        raise TransportError("error", f"{where}: {exc.strerror or exc}") from None
    check.record_accepted()
    return conn


async def _run(conn: Any, argv: list[str], timeout: float) -> tuple[int | None, str, str]:
    result = await asyncio.wait_for(conn.run(quote_argv(argv), check=False), timeout)
    return result.exit_status, str(result.stdout or ""), str(result.stderr or "")


async def key_login(node: Node, key_path: Path, options: ConnectOptions) -> None:
    """Log in with key_path only and run `true`; raise TransportError when that fails."""
    conn = await _connect(node, options, key_path=key_path)
    try:
        status, _, err = await _run(conn, ["true"], options.command_timeout)
    finally:
        conn.close()
    if status != 0:
        raise TransportError("error", f"{node.name}: a session after key login failed: {err}")


async def install_key(node: Node, password: str, public_line: str, options: ConnectOptions) -> str:
    """Log in by password and add the public key to ~/.ssh/authorized_keys once.

    Returns 'installed' or 'present'.
    """
    conn = await _connect(node, options, password=password)
    try:
        blob = public_line.split()[1]
        status, out, err = await _run(
            conn, ["sh", "-c", INSTALL_KEY, "edgectl", public_line, blob], options.command_timeout
        )
    finally:
        conn.close()
    state = out.strip().splitlines()[-1:] or [""]
    if status != 0 or state[0] not in ("installed", "present"):
        detail = (err.strip().splitlines() or [f"exit {status}"])[-1]
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
