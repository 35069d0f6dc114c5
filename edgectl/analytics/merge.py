"""Merge the partial results of an analytics job's tasks into one result, and lay it out.

A partial (one per task, written by the node-side runner) holds, per group of rows (one
group for `describe`, one per key for `groupby`, one per time bucket for `window`) and per
column: the moments of its numbers (see moments.py), a rank summary of them when quantiles
are wanted (see quantiles.py), and how many values were not numbers. Merging adds them up;
the layout functions turn the merged result into table rows or CSV for the CLI.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgectl.analytics.moments import Moments, merge_all
from edgectl.analytics.options import QUANTILES
from edgectl.analytics.quantiles import (
    SUMMARY_POINTS,
    RankSummary,
    quantile,
    rank_error_bound,
)

PARTIAL_FORMAT = "edgectl-analytics-partial/1"
RESULT_FORMAT = "edgectl-analytics/1"
DESCRIBE_STATS = ("count", "missing", "non_numeric", "sum", "mean", "std", "min", "max")


class PartialError(ValueError):
    """A partial result that cannot be merged (wrong format, or malformed numbers)."""


@dataclass
class _Column:
    moments: list[Moments] = field(default_factory=list)
    summaries: list[RankSummary] = field(default_factory=list)
    non_numeric: int = 0


@dataclass
class _Group:
    key: list[Any]
    rows: int = 0
    columns: dict[str, _Column] = field(default_factory=dict)


def merge_partials(
    partials: Sequence[dict[str, Any]],
    params: dict[str, Any],
    inputs_total: int | None = None,
) -> dict[str, Any]:
    """One result from the tasks' partials: exact moments, quantiles with their rank bound."""
    op = params.get("op", "describe")
    groups: dict[str, _Group] = {}
    files: list[dict[str, Any]] = []
    counters = {"rows_read": 0, "rows": 0, "bad_records": 0, "bad_time": 0}
    for partial in partials:
        if partial.get("format") != PARTIAL_FORMAT:
            raise PartialError(f"not an analytics partial: {str(partial.get('format'))[:40]!r}")
        files.extend(partial.get("files", []))
        for name in counters:
            counters[name] += int(partial.get(name) or 0)
        for group in partial.get("groups", []):
            _add_group(groups, group)
    failed = [f for f in files if f.get("error")]
    document: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "op": op,
        "params": {k: v for k, v in params.items() if k != "inputs"},
        "inputs": {
            "total": inputs_total if inputs_total is not None else len(files),
            "merged": len(files) - len(failed),
            "failed": [{"name": f.get("name"), "error": f.get("error")} for f in failed],
        },
        "partials": len(partials),
        **counters,
        "quantiles": {
            "method": "nearest-rank",
            "points_per_partial": SUMMARY_POINTS,
            "rank_error": "per value, a proven bound on |rank - ceil(q*N)|; 0 = exact",
        },
    }
    document["complete"] = not failed and (
        inputs_total is None or document["inputs"]["merged"] == inputs_total
    )
    if op == "describe":
        group = groups.get("[]", _Group([]))
        document["columns"] = [
            {"column": name, **_describe(group.rows, column)}
            for name, column in group.columns.items()
            if sum(m.n for m in column.moments)
        ]
        document["text_columns"] = [
            {"column": name, "values": column.non_numeric}
            for name, column in group.columns.items()
            if not sum(m.n for m in column.moments)
        ]
    else:
        document["groups"] = _grouped(op, params, groups.values())
    return document


def _add_group(groups: dict[str, _Group], group: dict[str, Any]) -> None:
    key = list(group.get("key", []))
    slot = groups.setdefault(json.dumps(key), _Group(key))
    slot.rows += int(group.get("rows") or 0)
    for name, part in group.get("columns", {}).items():
        column = slot.columns.setdefault(str(name), _Column())
        try:
            moments = Moments.from_partial(part)
            column.moments.append(moments)
            column.non_numeric += int(part.get("text") or 0)
            if "q" in part and moments.n:
                column.summaries.append(RankSummary.from_partial(part["q"], moments.n))
        except (KeyError, TypeError, ValueError) as exc:
            raise PartialError(f"column {name!r}: {exc}") from None


def _quantiles(column: _Column, names: Iterable[str]) -> dict[str, Any]:
    wanted = [n for n in names if n in QUANTILES]
    if not wanted:
        return {}
    values: dict[str, Any] = {n: quantile(column.summaries, QUANTILES[n]) for n in wanted}
    values["rank_error"] = rank_error_bound(column.summaries)
    return values


def _describe(rows: int, column: _Column) -> dict[str, Any]:
    moments = merge_all(column.moments)
    stats = moments.stats()
    return {
        "count": moments.n,
        "missing": max(0, rows - moments.n - column.non_numeric),
        "non_numeric": column.non_numeric,
        "sum": stats["sum"],
        "mean": stats["mean"],
        "std": stats["std"],
        "min": stats["min"],
        "max": stats["max"],
        **_quantiles(column, QUANTILES),
    }


def _grouped(op: str, params: dict[str, Any], groups: Iterable[_Group]) -> list[dict[str, Any]]:
    aggregates = list(params.get("aggs") or [])
    by = list(params.get("by") or [])
    numeric = {
        name
        for group in groups
        for name, column in group.columns.items()
        if any(m.n for m in column.moments)
    }
    out: list[dict[str, Any]] = []
    for group in groups:
        values: dict[str, Any] = {}
        for name, column in group.columns.items():
            if name not in numeric:
                continue
            stats: dict[str, Any] = merge_all(column.moments).stats()
            chosen = {a: stats[a] for a in aggregates if a in stats}
            values[name] = {**chosen, **_quantiles(column, aggregates)}
        if op == "window":
            start = float(group.key[0])
            key: dict[str, Any] = {"bucket": bucket_label(start), "start": start}
        else:
            key = dict(zip(by, group.key, strict=False))
        out.append({"key": key, "rows": group.rows, "values": values})
    if op == "window":
        out.sort(key=lambda g: g["key"]["start"])
    else:
        out.sort(key=lambda g: [(v is not None, str(v)) for v in g["key"].values()])
    return out


def bucket_label(start: float) -> str:
    """A bucket's start as UTC ISO 8601 (`2024-05-01T10:05:00Z`)."""
    moment = dt.datetime.fromtimestamp(start, tz=dt.timezone.utc)
    text = moment.isoformat(timespec="milliseconds" if start % 1 else "seconds")
    return text.replace("+00:00", "Z")


def table(document: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows (raw values) of a merged result, for a table or CSV."""
    quantile_names = [q for q in QUANTILES]
    if document["op"] == "describe":
        names = [*DESCRIBE_STATS, *quantile_names, "rank_error"]
        rows = [[c["column"], *(c.get(n) for n in names)] for c in document["columns"]]
        return ["column", *names], rows
    groups = document["groups"]
    key_names = ["bucket"] if document["op"] == "window" else list(document["params"]["by"])
    aggregates = list(document["params"].get("aggs") or [])
    if any(a in QUANTILES for a in aggregates):
        aggregates.append("rank_error")
    columns = sorted({name for g in groups for name in g["values"]})
    headers = [*key_names, "rows", *(f"{c}.{a}" for c in columns for a in aggregates)]
    rows = []
    for group in groups:
        row: list[Any] = [group["key"].get(k) for k in key_names]
        row.append(group["rows"])
        for name in columns:
            values = group["values"].get(name, {})
            row.extend(values.get(a) for a in aggregates)
        rows.append(row)
    return headers, rows
