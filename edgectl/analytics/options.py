"""The options of an analytics job: `--where` filters, `--every` periods, `--agg` lists.

Filters are parsed by a small grammar (column, operator, literal) into plain data that the
node-side runner applies; nothing the user types is ever evaluated as code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgectl.errors import UsageError

OPERATORS = ("<=", ">=", "!=", "=", "<", ">")
AGGREGATES = ("count", "sum", "mean", "std", "min", "max", "p50", "p90", "p99")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
DEFAULT_AGGREGATES = {"groupby": ("count", "mean"), "window": ("count", "mean", "min", "max")}
OPS = ("describe", "groupby", "window")
MAX_COLUMN = 200

# The column is everything before the first operator character; `==` is taken as `=`.
_WHERE = re.compile(r"\s*([^<>=!]+?)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*", re.DOTALL)
_EVERY = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


@dataclass(frozen=True)
class Filter:
    """One `--where` condition: a row passes when `column op value` holds.

    A number literal compares numerically (a row whose value is not a number fails);
    a quoted or non-numeric literal compares as text. A row without the column fails.
    """

    column: str
    op: str
    value: float | str

    def to_dict(self) -> dict[str, Any]:
        """The plain form shipped to the node-side runner."""
        return {"column": self.column, "op": self.op, "value": self.value}


def parse_number(text: str) -> float | None:
    """A finite number written as decimal text, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_where(text: str) -> Filter:
    """Parse `col>value`, `name = 'a b'`, `temp<=-3.5`...; a usage error for anything else."""
    match = _WHERE.fullmatch(text)
    if match is None:
        raise UsageError(
            f"--where {text!r}: expected COLUMN OP VALUE with OP one of {' '.join(OPERATORS)}"
        )
    column, op, literal = match.groups()
    op = "=" if op == "==" else op
    check_column(column, "--where")
    if len(literal) >= 2 and literal[0] == literal[-1] and literal[0] in "'\"":
        return Filter(column, op, literal[1:-1])
    if not literal:
        raise UsageError(f"--where {text!r}: no value after {op!r} (use '' for an empty text)")
    if literal[0] in "<>=!":
        raise UsageError(f"--where {text!r}: two operators (quote the value if it is text)")
    number = parse_number(literal)
    return Filter(column, op, literal if number is None else number)


def check_column(name: str, option: str) -> str:
    """A column name as given (trimmed); refused when empty, over-long or with control chars."""
    if not name or len(name) > MAX_COLUMN or any(ord(c) < 32 for c in name):
        raise UsageError(f"{option}: bad column name {name[:40]!r}")
    return name


def parse_every(text: str) -> float:
    """A bucket width such as `5m`, `30s`, `1h`, `1d`, `250ms`, in seconds."""
    match = _EVERY.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"--every {text!r}: expected a number and a unit (ms, s, m, h, d, w)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise UsageError(f"--every {text!r}: the width must be positive")
    return seconds


def parse_aggregates(text: str | Sequence[str] | None, op: str) -> list[str]:
    """The aggregate names of `--agg mean,max` (checked), or the op's defaults."""
    if not text:
        return list(DEFAULT_AGGREGATES.get(op, AGGREGATES))
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    names = [item.strip() for item in items if item.strip()]
    unknown = [n for n in names if n not in AGGREGATES]
    if unknown or not names:
        raise UsageError(f"--agg {','.join(unknown) or text!r}: use some of {','.join(AGGREGATES)}")
    return list(dict.fromkeys(names))


def parse_columns(text: str | Sequence[str] | None, option: str) -> list[str]:
    """A comma-separated list of column names (each checked), in order, once each."""
    if not text:
        return []
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    return list(dict.fromkeys(check_column(item.strip(), option) for item in items))
