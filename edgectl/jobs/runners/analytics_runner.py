#!/usr/bin/env python3
"""edgectl analytics runner: partial summaries of CSV and JSON-lines files, on the node.

Standalone: Python 3.8 or newer and its standard library only (it never imports edgectl).
Run in a task directory as `python3 analytics_runner.py analytics_task.json`; it writes one
file, out/partial-<task id>.json, which the controller merges with the other tasks' partials.

Per group of rows (all rows for `describe`, one group per `--by` key for `groupby`, one per
time bucket for `window`) and per column it keeps: how many values are numbers, how many are
text, and of the numbers their count, sum (compensated), mean, M2 (sum of squared deviations),
min and max. When quantiles are wanted it also keeps the numbers themselves (8 bytes each) and
ships them sorted: all of them up to POINTS, else POINTS of them at evenly spaced ranks with
those ranks, always the first and the last (the controller bounds the rank error from them).

A file that cannot be read is reported in the partial with its error; the other files of the
task are still summarised. Rows failing a `--where` filter are not counted anywhere.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
import math
import os
import socket
import sys
import time
from array import array
from collections.abc import Iterator
from typing import Any

FORMAT = "edgectl-analytics-partial/1"
POINTS = 1001
MISSING = frozenset(["", "na", "n/a", "nan", "null", "none"])
MAX_FIELD = 1 << 20
PARAMS = ("op", "by", "aggs", "time_col", "every", "where", "columns")


class Column:
    """Running summary of one column within one group."""

    __slots__ = ("comp", "high", "low", "m2", "mean", "n", "text", "total", "values")

    def __init__(self, keep_values: bool) -> None:
        self.n = 0
        self.text = 0
        self.total = 0.0
        self.comp = 0.0  # Neumaier's compensation term of the running sum
        self.mean = 0.0
        self.m2 = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.values = array("d") if keep_values else None

    def add(self, x: float) -> None:
        """Count one number (Welford's update for mean and M2)."""
        self.n += 1
        t = self.total + x
        if abs(self.total) >= abs(x):
            self.comp += (self.total - t) + x
        else:
            self.comp += (x - t) + self.total
        self.total = t
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if x < self.low:
            self.low = x
        if x > self.high:
            self.high = x
        if self.values is not None:
            self.values.append(x)

    def to_dict(self) -> dict[str, Any]:
        """The shipped form: n, text, sum, mean, m2, min, max and maybe `q` (the summary)."""
        out: dict[str, Any] = {"n": self.n, "text": self.text}
        if self.n == 0:
            return out
        total, mean, m2 = self.total + self.comp, self.mean, self.m2
        if self.values is not None:
            values = sorted(self.values)
            total = math.fsum(values)
            mean = total / self.n
            m2 = math.fsum((x - mean) * (x - mean) for x in values)
            out["q"] = summarize(values)
        out.update({"sum": total, "mean": mean, "m2": m2, "min": self.low, "max": self.high})
        return out


def summarize(values: list[float]) -> dict[str, Any]:
    """All sorted values when few, else POINTS of them at evenly spaced ranks (1-based)."""
    n = len(values)
    if n <= POINTS:
        return {"v": values}
    ranks = sorted({1 + j * (n - 1) // (POINTS - 1) for j in range(POINTS)})
    return {"v": [values[r - 1] for r in ranks], "r": ranks}


def classify(value: object) -> tuple[str, float | None]:
    """('missing', None), ('number', x) or ('text', None) for one cell."""
    if value is None:
        return ("missing", None)
    if isinstance(value, bool):
        return ("text", None)
    if isinstance(value, (int, float)):
        x = float(value)
        return ("number", x) if math.isfinite(x) else ("missing", None)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in MISSING:
            return ("missing", None)
        try:
            x = float(text)
        except ValueError:
            return ("text", None)
        return ("number", x) if math.isfinite(x) else ("missing", None)
    return ("text", None)


def key_text(value: object) -> object:
    """A group key part: text as given (trimmed), numbers as JSON writes them, None if missing."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        return None if text.lower() in MISSING else text
    return json.dumps(value, sort_keys=True)


def passes(row: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
    """Whether a row meets every filter (a missing column fails)."""
    for f in filters:
        value = row.get(f["column"])
        kind, number = classify(value)
        if kind == "missing":
            return False
        literal = f["value"]
        left: Any
        right: Any
        if isinstance(literal, (int, float)):
            if number is None:
                return False
            left, right = number, float(literal)
        else:
            left = (value if isinstance(value, str) else json.dumps(value)).strip()
            right = str(literal)
        op = f["op"]
        ok = (
            left == right
            if op == "="
            else left != right
            if op == "!="
            else left < right
            if op == "<"
            else left <= right
            if op == "<="
            else left > right
            if op == ">"
            else left >= right
        )
        if not ok:
            return False
    return True


def parse_time(value: object) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 text (naive = UTC); else None."""
    kind, number = classify(value)
    if kind == "number":
        return number
    if kind != "text" or not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def open_text(path: str) -> io.TextIOWrapper:
    """A text stream of the file, gunzipped when it ends in .gz."""
    raw = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def file_kind(path: str) -> str:
    """'jsonl', 'tsv' or 'csv', from the name (sniffing the first character if unsure)."""
    name = path[:-3] if path.endswith(".gz") else path
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith(".tsv") or lower.endswith(".tab"):
        return "tsv"
    if lower.endswith(".csv"):
        return "csv"
    with open_text(path) as handle:
        head = handle.read(4096).lstrip()
    return "jsonl" if head.startswith("{") else "csv"


def records(path: str, stats: dict[str, int]) -> Iterator[dict[str, Any]]:
    """The rows of one file as dicts; malformed JSON lines are counted in stats['bad']."""
    kind = file_kind(path)
    with open_text(path) as handle:
        if kind == "jsonl":
            for line in handle:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    stats["bad"] += 1
                    continue
                if isinstance(row, dict):
                    yield row
                else:
                    stats["bad"] += 1
            return
        reader = csv.reader(handle, delimiter="\t" if kind == "tsv" else ",")
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        width = len(header)
        for fields in reader:
            if not fields:
                continue
            if len(fields) > width:
                stats["bad"] += 1
            yield {header[i]: fields[i] for i in range(min(width, len(fields)))}


class Summary:
    """Groups of rows and their columns, for one task."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.op = config.get("op", "describe")
        self.by = list(config.get("by") or [])
        self.time_col = str(config.get("time_col") or "")
        self.every = float(config.get("every") or 0)
        self.filters = list(config.get("where") or [])
        self.only = list(config.get("columns") or [])
        aggregates = config.get("aggs") or []
        self.keep_values = self.op == "describe" or any(a.startswith("p") for a in aggregates)
        self.skip = set(self.by) | ({self.time_col} if self.time_col else set())
        self.groups: dict[tuple[Any, ...], list[Any]] = {}
        self.rows_read = 0
        self.rows = 0
        self.bad_time = 0

    def key(self, row: dict[str, Any]) -> tuple[Any, ...] | None:
        """The group of a row (None: no usable time in a window op)."""
        if self.op == "groupby":
            return tuple(key_text(row.get(c)) for c in self.by)
        if self.op == "window":
            moment = parse_time(row.get(self.time_col))
            if moment is None:
                return None
            return (math.floor(moment / self.every) * self.every,)
        return ()

    def add(self, row: dict[str, Any]) -> None:
        """Count one row into its group."""
        self.rows_read += 1
        if self.filters and not passes(row, self.filters):
            return
        key = self.key(row)
        if key is None:
            self.bad_time += 1
            return
        self.rows += 1
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = [0, {}]
        group[0] += 1
        columns = group[1]
        names = self.only or row.keys()
        for name in names:
            if name in self.skip:
                continue
            kind, number = classify(row.get(name))
            if kind == "missing":
                if name not in columns and self.only:
                    columns[name] = Column(self.keep_values)
                continue
            column = columns.get(name)
            if column is None:
                column = columns[name] = Column(self.keep_values)
            if kind == "number":
                column.add(number)
            else:
                column.text += 1

    def to_dict(self) -> list[dict[str, Any]]:
        """The groups in the shipped form."""
        if self.op == "describe" and () not in self.groups:
            self.groups[()] = [0, {}]
        return [
            {
                "key": list(key),
                "rows": rows,
                "columns": {name: column.to_dict() for name, column in columns.items()},
            }
            for key, (rows, columns) in self.groups.items()
        ]


def claim(index: int) -> bool:
    """Whether this runner may start input `index`: it claims it (mkdir claims/<index>)
    unless edgectl did first, taking the input back to place it elsewhere; a skipped input
    is listed in `skipped`, which edgectl reads with the task's status."""
    try:
        os.mkdir(os.path.join("claims", str(index)))
    except FileExistsError:
        with open("skipped", "a", encoding="ascii") as skipped:
            skipped.write(f"{index}\n")
        return False
    return True


def main(argv: list[str]) -> int:
    """Summarise the task's inputs into out/partial-<task id>.json."""
    if len(argv) != 2:
        print("usage: analytics_runner.py TASK.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        config = json.load(handle)
    csv.field_size_limit(MAX_FIELD)
    started = time.time()
    summary = Summary(config)
    files = []
    bad_total = 0
    os.makedirs("claims", exist_ok=True)
    for index, item in enumerate(config.get("inputs", [])):
        if not claim(index):
            continue
        stats = {"bad": 0}
        before = summary.rows_read
        entry = {"name": item["name"], "path": item["path"], "error": None}
        try:
            for row in records(item["path"], stats):
                summary.add(row)
        except (OSError, EOFError, UnicodeError, csv.Error) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        entry["rows"] = summary.rows_read - before
        entry["bad_records"] = stats["bad"]
        bad_total += stats["bad"]
        files.append(entry)
        with open("progress", "a") as progress:  # a byte per input done, for edgectl's polls
            progress.write(".")
    task_id = os.path.basename(os.getcwd())
    document = {
        "format": FORMAT,
        "op": summary.op,
        "params": {key: config.get(key) for key in PARAMS},
        "task": task_id,
        "host": socket.gethostname(),
        "started": started,
        "seconds": round(time.time() - started, 3),
        "files": files,
        "rows_read": summary.rows_read,
        "rows": summary.rows,
        "bad_records": bad_total,
        "bad_time": summary.bad_time,
        "groups": summary.to_dict(),
    }
    os.makedirs("out", exist_ok=True)
    temp = "partial.json.tmp"  # outside out/: only whole files ever appear there
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(document, handle, separators=(",", ":"), allow_nan=False)
    os.replace(temp, os.path.join("out", "partial-" + task_id + ".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
