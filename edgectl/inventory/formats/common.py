"""Helpers every importer shares: building nodes with line-aware errors, duplicates, values."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable
from typing import Any

from edgectl.errors import ImportFormatError, ValidationError
from edgectl.inventory.model import Node


def build_node(path: str, line: int | None, **fields: Any) -> Node:
    """Make a Node, turning a refused value into an ImportFormatError at `line`."""
    try:
        return Node(**fields)
    except ValidationError as exc:
        # a refused name already quotes itself; anything else says which node it was
        prefix = "" if exc.message.startswith("invalid node name") else f"node {_name_of(fields)}: "
        raise ImportFormatError(path, line, prefix + exc.message) from None
    except TypeError as exc:
        # a wrongly typed field can trip Node's own code before its checks speak
        raise ImportFormatError(path, line, f"node {_name_of(fields)}: {exc}") from None


def _name_of(fields: dict[str, Any]) -> str:
    name = fields.get("name")
    return repr(name) if isinstance(name, str) and len(name) <= 80 else "(unnamed)"


def unique_nodes(path: str, located: Iterable[tuple[Node, int | None]]) -> list[Node]:
    """Return the nodes in order, or raise naming both lines of the first repeated name."""
    first_line: dict[str, int | None] = {}
    nodes: list[Node] = []
    for node, line in located:
        if node.name in first_line:
            earlier = first_line[node.name]
            where = f"lines {earlier} and {line}" if earlier and line else "twice"
            raise ImportFormatError(path, line, f"duplicate node name {node.name!r} ({where})")
        first_line[node.name] = line
        nodes.append(node)
    return nodes


def stringify(value: object) -> str:
    """Render a parsed scalar or structure as a label value (JSON spelling for non-strings)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (int, float)):
        return str(value)
    # lists and tables: compact JSON, so a script can parse the label back
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def line_of_match(text: str, pattern: re.Pattern[str], occurrence: int = 0) -> int | None:
    """The 1-based line of the n-th line matching `pattern`, or None."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.search(line):
            if seen == occurrence:
                return number
            seen += 1
    return None


def line_at_offset(text: str, offset: int) -> int:
    """The 1-based line holding character `offset` of `text`."""
    return text.count("\n", 0, offset) + 1
