"""The `analytics` kind: summaries of CSV and JSON-lines data, computed where the data is.

Each task runs the node-side runner (runners/analytics_runner.py, standard library only)
over its chunk of files and brings home one small partial summary; with `--remote-path`
the data never leaves the nodes. When the job has run, `finish` merges the partials
(edgectl.analytics) into results/<job-id>/analytics.json.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgectl.analytics.merge import PartialError, merge_partials, table
from edgectl.analytics.options import (
    OPS,
    parse_aggregates,
    parse_columns,
    parse_every,
    parse_where,
)
from edgectl.errors import UsageError
from edgectl.jobs.kinds import Kind, KindReport, TaskPayload, input_path, python_runner_payload
from edgectl.jobs.model import Job

RESULT_NAME = "analytics.json"
FOREIGN = {
    "run": "--run",
    "files": "--file",
    "lang": "--lang",
    "psm": "--psm",
    "formats": "--format",
    "rotate": "--rotate",
    "dpi": "--dpi",
    "preprocess": "--preprocess",
}


class AnalyticsKind(Kind):
    """describe, groupby and window over CSV / JSON lines, merged exactly on the controller."""

    name = "analytics"

    def check(self, params: dict[str, Any]) -> None:
        """Parse and check every option now (a bad filter fails before anything runs)."""
        for key, option in FOREIGN.items():
            if params.get(key):
                raise UsageError(f"{option} is not an option of analytics jobs")
        op = params.get("op") or "describe"
        if op not in OPS:
            raise UsageError(f"--op {op!r}: use describe, groupby or window")
        by = parse_columns(params.get("by"), "--by")
        time_col = params.get("time_col")
        every = params.get("every")
        if op == "groupby" and not by:
            raise UsageError("--op groupby needs --by COLUMN[,COLUMN...]")
        if op == "window" and not (time_col and every):
            raise UsageError("--op window needs --time-col COLUMN and --every WIDTH (e.g. 5m)")
        if op != "groupby" and by:
            raise UsageError("--by goes with --op groupby")
        if op != "window" and (time_col or every):
            raise UsageError("--time-col and --every go with --op window")
        if op == "describe" and params.get("aggs"):
            raise UsageError("--agg goes with --op groupby or window (describe shows them all)")
        where = params.get("where") or []
        if isinstance(where, str):
            where = [where]
        filters = [parse_where(w) for w in where]
        params.update(
            op=op,
            by=by,
            aggs=parse_aggregates(params.get("aggs"), op),
            time_col=time_col,
            every=every,
            every_s=parse_every(str(every)) if every else None,
            where=list(where),
            filters=[f.to_dict() for f in filters],
            columns=parse_columns(params.get("columns"), "--columns"),
        )

    def payload(self, params: dict[str, Any], inputs: Sequence[dict[str, Any]]) -> TaskPayload:
        """The runner, its task file (options and this chunk's files) and run.sh."""
        files: dict[str, Path | bytes] = {}
        chunk = [{"name": item["name"], "path": input_path(item, files)} for item in inputs]
        task = {
            "op": params["op"],
            "by": params["by"],
            "aggs": params["aggs"],
            "time_col": params["time_col"],
            "every": params["every_s"],
            "where": params["filters"],
            "columns": params["columns"],
            "inputs": chunk,
        }
        return python_runner_payload(files, "analytics", task)

    def finish(self, job: Job, directory: Path) -> None:
        """Merge the stored partials into analytics.json (written whole, atomically)."""
        names = _stored_names(directory)
        document = merge(job.params, directory, names)
        document["job"] = job.id
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_json(directory / RESULT_NAME, document)

    def report(self, directory: Path, files: Sequence[dict[str, Any]]) -> KindReport:
        """The merged result: stored by `finish`, or merged now from what has arrived."""
        stored = directory / RESULT_NAME
        if stored.is_file():
            document = json.loads(stored.read_text(encoding="utf-8"))
        else:
            document = merge({}, directory, [f["name"] for f in files])
        headers, rows = table(document)
        inputs = document["inputs"]
        unmerged = max(inputs["total"] - inputs["merged"], len(inputs["failed"]))
        return KindReport("analytics", document, headers, rows, unmerged)


def _stored_names(directory: Path) -> list[str]:
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        return []
    return [f["name"] for f in json.loads(manifest.read_text(encoding="utf-8"))["files"]]


def merge(params: dict[str, Any], directory: Path, names: Sequence[str]) -> dict[str, Any]:
    """Merge the partial files among `names` (params: the job's, or read from a partial)."""
    partials = []
    for name in sorted(names):
        if name.startswith("partial-") and name.endswith(".json"):
            partials.append(json.loads((directory / name).read_text(encoding="utf-8")))
    if not params and partials:
        params = dict(partials[0].get("params") or {"op": partials[0].get("op", "describe")})
    try:
        inputs = params.get("inputs")
        return merge_partials(partials, params, len(inputs) if inputs is not None else None)
    except PartialError as exc:
        raise UsageError(f"cannot merge the analytics results in {directory}: {exc}") from None


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write a JSON file whole: temp file, fsync, rename."""
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, allow_nan=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
