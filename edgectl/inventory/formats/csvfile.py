"""CSV inventories: a header row naming the columns, then one node per row.

Columns (any order): name and host are required; port, user, key, groups (`a;b`),
labels (`k=v;k=v`), workdir and connection are optional, and an empty cell means the
default. Blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from edgectl.errors import ImportFormatError, ValidationError
from edgectl.inventory.formats.common import build_node, unique_nodes
from edgectl.inventory.model import Node, parse_label

COLUMNS = ("name", "host", "port", "user", "key", "groups", "labels", "workdir", "connection")
REQUIRED = ("name", "host")


class _Lines:
    """Feed lines to the csv reader, blanking comment lines that start a record.

    Knowing whether a line starts a record (rather than continuing a quoted multi-line
    cell) keeps a cell that happens to hold a line beginning with `#` intact.
    """

    def __init__(self, text: str) -> None:
        # newline="" splits at \n, \r\n and \r only, as the csv module expects
        self._lines = iter(io.StringIO(text, newline=""))
        self.at_record_start = True

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        if self.at_record_start and line.lstrip().startswith("#"):
            line = "\n"
        self.at_record_start = False
        return line


def _rows(text: str, path: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line, cells) for every non-blank record."""
    lines = _Lines(text)
    reader = csv.reader(lines, strict=True)
    while True:
        start = reader.line_num + 1
        lines.at_record_start = True
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFormatError(path, start, f"CSV syntax error: {exc}") from None
        if any(cell.strip() for cell in row):
            yield start, row


def parse_csv(text: str, path: str) -> list[Node]:
    """Parse a CSV inventory into nodes, or raise ImportFormatError."""
    rows = _rows(text, path)
    first = next(rows, None)
    if first is None:
        return []
    header_line, header = first
    columns = _columns(header, header_line, path)
    located: list[tuple[Node, int | None]] = []
    for line, cells in rows:
        if len(cells) != len(columns):
            raise ImportFormatError(
                path, line, f"this row has {len(cells)} cells, the header has {len(columns)}"
            )
        values = {column: cell.strip() for column, cell in zip(columns, cells, strict=True)}
        located.append((_node(values, path, line), line))
    return unique_nodes(path, located)


def _columns(header: list[str], line: int, path: str) -> list[str]:
    columns = [cell.strip().lower() for cell in header]
    seen: set[str] = set()
    for column in columns:
        if column not in COLUMNS:
            raise ImportFormatError(
                path, line, f"unknown column {column!r}: use {', '.join(COLUMNS)}"
            )
        if column in seen:
            raise ImportFormatError(path, line, f"column {column!r} is given twice")
        seen.add(column)
    for column in REQUIRED:
        if column not in seen:
            raise ImportFormatError(path, line, f"the header row needs a {column!r} column")
    return columns


def _node(values: dict[str, str], path: str, line: int) -> Node:
    fields: dict[str, Any] = {
        k: v for k, v in values.items() if v and k not in ("groups", "labels")
    }
    for required in REQUIRED:
        if required not in fields:
            raise ImportFormatError(path, line, f"the {required!r} cell is empty")
    fields["groups"] = [g.strip() for g in values.get("groups", "").split(";") if g.strip()]
    try:
        fields["labels"] = dict(
            parse_label(part) for part in values.get("labels", "").split(";") if part.strip()
        )
    except ValidationError as exc:
        raise ImportFormatError(path, line, f"node {fields['name']!r}: {exc.message}") from None
    return build_node(path, line, **fields)


def dump_csv(nodes: list[Node]) -> str:
    """Render nodes as CSV with every column; refuse values that could not be read back."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for node in nodes:
        for key, value in node.labels.items():
            if ";" in value or value != value.strip():
                raise ValidationError(
                    f"node {node.name!r}: label {key}={value!r} cannot be written to CSV "
                    "(';' separates labels and cells are trimmed); export as toml or json"
                )
        for what, text in (("key", node.key or ""), ("workdir", node.workdir)):
            if text != text.strip():
                raise ValidationError(
                    f"node {node.name!r}: {what} {text!r} has surrounding spaces, which CSV "
                    "import trims; export as toml or json"
                )
        writer.writerow(
            [
                node.name,
                node.host,
                node.port,
                node.user or "",
                node.key or "",
                ";".join(node.groups),
                ";".join(f"{k}={v}" for k, v in node.labels.items()),
                node.workdir,
                node.connection,
            ]
        )
    return out.getvalue()
