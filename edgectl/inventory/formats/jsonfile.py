"""JSON inventories: the shape `edgectl inventory export --format json` writes.

Either an array of node objects (as `Node.to_dict()` gives) or `{"nodes": [...]}`.
"""

from __future__ import annotations

import json
from typing import Any

from edgectl.errors import ImportFormatError, ValidationError
from edgectl.inventory.formats.common import line_at_offset, unique_nodes
from edgectl.inventory.model import Node


def parse_json(text: str, path: str) -> list[Node]:
    """Parse a JSON inventory into nodes, or raise ImportFormatError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(path, exc.lineno, f"JSON syntax error: {exc.msg}") from None
    if isinstance(data, dict):
        extra = sorted(set(data) - {"nodes"})
        if extra or not isinstance(data.get("nodes"), list):
            raise ImportFormatError(
                path, 1, 'give an array of nodes or an object {"nodes": [...]} and nothing else'
            )
        entries: list[Any] = data["nodes"]
    elif isinstance(data, list):
        entries = data
    else:
        raise ImportFormatError(path, 1, 'give an array of nodes or an object {"nodes": [...]}')
    lines = _element_lines(text)
    if len(lines) != len(entries):  # e.g. a repeated "nodes" key: positions unknown
        lines = [None] * len(entries)
    located: list[tuple[Node, int | None]] = []
    for entry, line in zip(entries, lines, strict=True):
        try:
            node = Node.from_dict(entry)
        except ValidationError as exc:
            name = entry.get("name") if isinstance(entry, dict) else None
            what = f"node {name!r}: " if isinstance(name, str) else ""
            raise ImportFormatError(path, line, what + exc.message) from None
        except TypeError as exc:
            raise ImportFormatError(path, line, str(exc)) from None
        located.append((node, line))
    return unique_nodes(path, located)


def _element_lines(text: str) -> list[int | None]:
    """The line where each element of the node array starts.

    The json module keeps no positions, so walk the (already valid) document with
    `raw_decode`, which reports where each value ends.
    """
    decoder = json.JSONDecoder()
    at = _skip_space(text, 0)
    if text[at] == "{":
        at = _skip_space(text, at + 1)
        while text[at] != "}":
            key, at = decoder.raw_decode(text, at)
            at = _skip_space(text, _skip_space(text, at) + 1)  # past the ':'
            if key == "nodes":
                return _array_lines(text, at, decoder)
            _, at = decoder.raw_decode(text, at)
            at = _skip_space(text, at)
            if text[at] == ",":
                at = _skip_space(text, at + 1)
        return []
    return _array_lines(text, at, decoder)


def _array_lines(text: str, at: int, decoder: json.JSONDecoder) -> list[int | None]:
    lines: list[int | None] = []
    at = _skip_space(text, at + 1)  # past the '['
    while text[at] != "]":
        lines.append(line_at_offset(text, at))
        _, at = decoder.raw_decode(text, at)
        at = _skip_space(text, at)
        if text[at] == ",":
            at = _skip_space(text, at + 1)
    return lines


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def dump_json(nodes: list[Node]) -> str:
    """Render nodes as a JSON array of node objects."""
    return json.dumps([node.to_dict() for node in nodes], indent=2, ensure_ascii=False) + "\n"
