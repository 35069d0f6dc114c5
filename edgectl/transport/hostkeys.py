"""Host-key policy: known keys pass, unknown keys need --accept-new, changed keys never pass."""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from edgectl.transport.base import ConnectOptions, TransportError

DEFAULT_SSH_PORT = 22

# Parsed known_hosts files, keyed by (path, mtime, size, inode): 200 connections of one run
# parse each file once, and an append (accept-new) or an edit is seen at once.
_cache: dict[str, tuple[tuple[int, int, int], asyncssh.SSHKnownHosts]] = {}
_cache_lock = threading.Lock()


def host_pattern(host: str, port: int) -> str:
    """The known_hosts name of host:port, as OpenSSH writes it."""
    return host if port == DEFAULT_SSH_PORT else f"[{host}]:{port}"


def fingerprint(key: asyncssh.SSHKey) -> str:
    """'ssh-ed25519 SHA256:...' for messages."""
    return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"


def _parse(text: str) -> asyncssh.SSHKnownHosts:
    """Parse known_hosts text, skipping malformed lines as OpenSSH does."""
    try:
        return asyncssh.import_known_hosts(text)
    except ValueError:
        known = asyncssh.SSHKnownHosts()
        for line in text.splitlines():
            try:
                known.load(line)
            except ValueError:
                continue
        return known


def load_known_hosts(path: Path) -> asyncssh.SSHKnownHosts:
    """The parsed known_hosts at path (empty if missing), cached until the file changes."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return asyncssh.SSHKnownHosts()
    except OSError as exc:
        raise TransportError("error", f"cannot read known_hosts {path}: {exc.strerror}") from exc
    stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    with _cache_lock:
        cached = _cache.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        known = _parse(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise TransportError("error", f"cannot read known_hosts {path}: {exc.strerror}") from exc
    with _cache_lock:
        _cache[str(path)] = (stamp, known)
    return known


Source = tuple[Path, asyncssh.SSHKnownHosts]


def _trusted_keys(
    sources: list[Source], host: str, addr: str, port: int
) -> list[tuple[Path, asyncssh.SSHKey]]:
    """Every key recorded as trusted for host/addr/port, with the file that holds it."""
    lookup_port = None if port == DEFAULT_SSH_PORT else port
    return [
        (path, key) for path, known in sources for key in known.match(host, addr, lookup_port)[0]
    ]


@dataclass
class HostKeyCheck:
    """The host-key decision for one connection attempt, and why it refused if it did."""

    options: ConnectOptions
    sources: list[Source] = field(default_factory=list)
    failure: TransportError | None = None
    accepted: asyncssh.SSHKey | None = None  # a new key to record once the handshake proves it
    lookup: tuple[str, str, int] | None = None  # host, addr, port as asyncssh matched them

    @classmethod
    def load(cls, options: ConnectOptions) -> HostKeyCheck:
        """Read edgectl's known_hosts and the user's (if any) for one connection."""
        paths = [options.known_hosts_path]
        if options.user_known_hosts is not None:
            paths.append(options.user_known_hosts.expanduser())
        return cls(options, [(path, load_known_hosts(path)) for path in paths])

    def known_hosts(
        self, host: str, addr: str, port: int | None
    ) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
        """asyncssh's `known_hosts` callable: (trusted keys, CA keys, revoked keys)."""
        trusted: list[asyncssh.SSHKey] = []
        authorities: list[asyncssh.SSHKey] = []
        revoked: list[asyncssh.SSHKey] = []
        for _, known in self.sources:
            match = known.match(host, addr, port)
            trusted.extend(match[0])
            authorities.extend(match[1])
            revoked.extend(match[2])
        return trusted, authorities, revoked

    def validate(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """Decide on a key that no known_hosts line trusts: unknown (maybe accept) or changed."""
        name = host_pattern(host, port)
        self.lookup = (host, addr, port)
        trusted = _trusted_keys(self.sources, host, addr, port)
        if trusted:
            path, known = trusted[0]
            self.failure = changed_error(name, key, known, path)
            return False
        if not self.options.accept_new:
            self.failure = TransportError(
                "hostkey-unknown",
                f"unknown host key for {name} ({fingerprint(key)}): not in "
                f"{self.options.known_hosts_path}; trust it with --accept-new",
            )
            return False
        self.accepted = key
        return True

    def record_accepted(self) -> None:
        """Append the accepted key to edgectl's known_hosts (locked, fsynced, no duplicates)."""
        if self.accepted is None or self.lookup is None:
            return
        key, self.accepted = self.accepted, None
        host, addr, port = self.lookup
        path = self.options.known_hosts_path
        line = f"{host_pattern(host, port)} {key.export_public_key('openssh').decode()}"
        line = " ".join(line.split()[:3]) + "\n"  # pattern, type, base64: no comment
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            handle.seek(0)
            current = _parse(handle.read().decode("utf-8", errors="replace"))
            trusted = [known for _, known in _trusted_keys([(path, current)], host, addr, port)]
            if key in trusted:
                return  # another connection recorded it first
            if trusted:
                # Someone recorded a different key for this host meanwhile: never add a second.
                raise changed_error(host_pattern(host, port), key, trusted[0], path)
            handle.seek(0, os.SEEK_END)
            handle.write(line.encode())
            handle.flush()
            os.fsync(handle.fileno())


def changed_error(
    name: str, offered: asyncssh.SSHKey, known: asyncssh.SSHKey, path: Path
) -> TransportError:
    """The loud refusal of a host whose key is not the one on record."""
    return TransportError(
        "hostkey-changed",
        f"HOST KEY CHANGED for {name}: it offered {fingerprint(offered)}, known_hosts has "
        f"{fingerprint(known)}; refusing to connect (possible man-in-the-middle). If the "
        f"node was reinstalled, remove its line from {path} and reconnect with --accept-new",
    )
