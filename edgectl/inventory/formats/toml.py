"""The edgectl TOML inventory: a `[defaults]` table and one `[[nodes]]` entry per node.

[defaults]
user = "edge"

[[nodes]]
name = "cam-01"
host = "192.0.2.11"
groups = ["cameras"]
labels = { arch = "arm64" }
"""

from __future__ import annotations

import re
import sys
from typing import Any

from edgectl.errors import ImportFormatError
from edgectl.inventory.formats.common import build_node, line_of_match, stringify, unique_nodes
from edgectl.inventory.model import DEFAULT_PORT, DEFAULT_WORKDIR, Node

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TOP_KEYS = ("defaults", "nodes")
DEFAULT_KEYS = ("user", "port", "key", "workdir")
NODE_KEYS = ("name", "host", "port", "user", "key", "groups", "labels", "workdir", "connection")

_NODES_HEADER = re.compile(r"^\s*\[\[\s*nodes\s*\]\]\s*(#.*)?$")
_WHERE = re.compile(r"\s*\(at line (\d+), column \d+\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def parse_toml(text: str, path: str) -> list[Node]:
    """Parse an edgectl TOML inventory into nodes, or raise ImportFormatError."""
    data = _load(text, path)
    for key in data:
        if key not in TOP_KEYS:
            line = line_of_match(text, _key_pattern(key))
            raise ImportFormatError(
                path, line, f"unknown key {key!r}: use [defaults] and [[nodes]] only"
            )
    defaults = _defaults(data.get("defaults", {}), text, path)
    entries = data.get("nodes", [])
    if not isinstance(entries, list):
        raise ImportFormatError(
            path, line_of_match(text, _key_pattern("nodes")), "'nodes' must be an array of tables"
        )
    lines = _node_lines(text, len(entries))
    located = [
        (_node(entry, defaults, path, line), line)
        for entry, line in zip(entries, lines, strict=True)
    ]
    return unique_nodes(path, located)


def looks_like_toml(text: str) -> bool:
    """True when `text` is TOML holding only edgectl's top-level keys."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return bool(data) and set(data) <= set(TOP_KEYS)


def _load(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _WHERE.search(message)
        if found:
            line: int | None = int(found.group(1))
            message = message[: found.start()]
        elif _AT_END.search(message):
            line = max(1, len(text.splitlines()))
            message = _AT_END.sub("", message)
        else:
            line = None
        raise ImportFormatError(path, line, f"TOML syntax error: {message}") from None


def _key_pattern(key: str) -> re.Pattern[str]:
    """A line that defines `key` at the top level, as a table header or an assignment."""
    quoted = re.escape(key)
    return re.compile(rf"^\s*(\[+\s*[\"']?{quoted}[\"']?\s*[\].]|[\"']?{quoted}[\"']?\s*=)")


def _node_lines(text: str, count: int) -> list[int | None]:
    """The line of each `[[nodes]]` header, when the file spells nodes that way."""
    lines = [
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if _NODES_HEADER.match(line)
    ]
    if len(lines) == count:
        return list(lines)
    # nodes written as an inline array (or a header inside a string): fall back to `nodes =`
    fallback = line_of_match(text, _key_pattern("nodes"))
    return [fallback] * count


def _defaults(table: object, text: str, path: str) -> dict[str, Any]:
    line = line_of_match(text, _key_pattern("defaults"))
    if not isinstance(table, dict):
        raise ImportFormatError(path, line, "'defaults' must be a table")
    for key in table:
        if key not in DEFAULT_KEYS:
            raise ImportFormatError(
                path, line, f"unknown key {key!r} in [defaults]: use {', '.join(DEFAULT_KEYS)}"
            )
    return dict(table)


def _node(entry: object, defaults: dict[str, Any], path: str, line: int | None) -> Node:
    if not isinstance(entry, dict):
        raise ImportFormatError(path, line, "each entry of 'nodes' must be a table")
    unknown = [key for key in entry if key not in NODE_KEYS]
    if unknown:
        raise ImportFormatError(
            path, line, f"unknown key {unknown[0]!r} in [[nodes]]: use {', '.join(NODE_KEYS)}"
        )
    for required in ("name", "host"):
        if required not in entry:
            raise ImportFormatError(path, line, f"a node needs {required!r}")
    fields: dict[str, Any] = {**defaults, **entry}
    labels = fields.get("labels", {})
    if not isinstance(labels, dict):
        raise ImportFormatError(path, line, f"node {fields['name']!r}: 'labels' must be a table")
    for key, value in labels.items():
        if isinstance(value, (dict, list)):
            raise ImportFormatError(
                path, line, f"node {fields['name']!r}: label {key!r} must be a single value"
            )
    fields["labels"] = {key: stringify(value) for key, value in labels.items()}
    return build_node(path, line, **fields)


def dump_toml(nodes: list[Node]) -> str:
    """Render nodes as an edgectl TOML inventory; fields at their defaults are left out."""
    parts = ["# edgectl inventory\n"]
    for node in nodes:
        lines = ["[[nodes]]", f"name = {_string(node.name)}", f"host = {_string(node.host)}"]
        if node.port != DEFAULT_PORT:
            lines.append(f"port = {node.port}")
        if node.user is not None:
            lines.append(f"user = {_string(node.user)}")
        if node.key is not None:
            lines.append(f"key = {_string(node.key)}")
        if node.groups:
            lines.append(f"groups = [{', '.join(_string(g) for g in node.groups)}]")
        if node.labels:
            pairs = ", ".join(f"{_key(k)} = {_string(v)}" for k, v in node.labels.items())
            lines.append(f"labels = {{ {pairs} }}")
        if node.workdir != DEFAULT_WORKDIR:
            lines.append(f"workdir = {_string(node.workdir)}")
        if node.connection != "ssh":
            lines.append(f"connection = {_string(node.connection)}")
        parts.append("\n" + "\n".join(lines) + "\n")
    return "".join(parts)


def _key(key: str) -> str:
    # a bare key with a dot would be read back as a nested table, so quote anything else
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(value: str) -> str:
    """A TOML basic string: escape quote, backslash and every control character."""
    out = ['"']
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
