"""Address specs for discovery: addresses, `addr:port`, CIDRs, `a-b` ranges, files of them."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgectl.errors import UsageError
from edgectl.inventory.model import DEFAULT_PORT, check_name, check_port

MAX_ADDRESSES = 65_536  # a /16: a larger range is almost surely a typo
MAX_PORTS = 16


@dataclass(frozen=True)
class Target:
    """One address and port to knock on."""

    host: str
    port: int


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
