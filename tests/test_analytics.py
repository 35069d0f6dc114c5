"""The `analytics` kind: safe filters, exact merges, bounded quantiles, and jobs on the fleet.

The reference is always a single pass over all the data in this process, computed with
`statistics` and `math.fsum`: the merged result of partials computed on separate nodes
must equal it to 1e-9 (relative) for count, sum, mean, std, min and max, and every
quantile must be a value whose rank is within the result's stated rank error of the
nearest-rank target ceil(q * N).
"""

from __future__ import annotations

import ast
import bisect
import csv
import datetime as dt
import gzip
import itertools
import json
import math
import random
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.analytics.merge import merge_partials
from edgectl.analytics.moments import Moments, merge_all
from edgectl.analytics.options import Filter, parse_every, parse_where
from edgectl.analytics.quantiles import (
    SUMMARY_POINTS,
    RankSummary,
    quantile,
    rank_error_bound,
    summarize,
    target_rank,
)
from edgectl.errors import UsageError
from edgectl.jobs.kinds import get_kind
from edgectl.jobs.service import Jobs
from tests.cli import run_cli
from tests.fleet import Fleet
from tests.test_fleet_view import make_home

RUNNER = Path(__file__).parents[1] / "edgectl" / "jobs" / "runners" / "analytics_runner.py"
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
START = 1_714_557_600  # 2024-05-01T10:00:00Z


# -- data and the single-process reference --------------------------------------------------


def make_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Sensor-like rows: time, site, temperature (some missing), a reading with ties."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        rows.append(
            {
                "time": START + i * 7 + seed * 100_000,
                "site": rng.choice(["north", "south", "east"]),
                "temp": None if rng.random() < 0.04 else round(rng.gauss(21.5, 4.0), 3),
                "load": rng.randint(0, 40),  # many ties
                "energy": rng.lognormvariate(3.0, 1.2),
            }
        )
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """CSV, JSON lines or gzipped CSV, by the file name (ISO times in the JSON files)."""
    if path.name.endswith(".jsonl"):
        with path.open("w") as handle:
            for row in rows:
                iso = dt.datetime.fromtimestamp(row["time"], dt.timezone.utc).isoformat()
                handle.write(json.dumps({**row, "time": iso.replace("+00:00", "Z")}) + "\n")
        return path
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "site", "temp", "load", "energy"])
        for row in rows:
            writer.writerow(
                [row[k] if row[k] is not None else "" for k in ("time", "site", "temp", "load")]
                + [repr(row["energy"])]
            )
    return path


def make_files(directory: Path, files: int, rows_each: int) -> tuple[list[Path], list[dict]]:
    directory.mkdir(parents=True, exist_ok=True)
    paths, everything = [], []
    suffixes = (".csv", ".jsonl", ".csv.gz")
    for i in range(files):
        rows = make_rows(rows_each, seed=i)
        paths.append(write_rows(directory / f"part{i:02d}{suffixes[i % 3]}", rows))
        everything.extend(rows)
    return paths, everything


def reference(values: list[float]) -> dict[str, Any]:
    """count, sum, mean, std, min, max of all values in one process."""
    return {
        "count": len(values),
        "sum": math.fsum(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def rank_error(data_sorted: list[float], value: float, q: float) -> int:
    """How far the rank range of `value` in the data is from the nearest-rank target."""
    target = target_rank(q, len(data_sorted))
    below = bisect.bisect_left(data_sorted, value)
    through = bisect.bisect_right(data_sorted, value)
    assert through > below, f"{value} is not a value of the data"
    return max(0, below + 1 - target, target - through)


def assert_matches(result: dict[str, Any], values: list[float]) -> None:
    """Exact stats to 1e-9 relative; quantiles within the stated rank error."""
    expected = reference(values)
    for name, want in expected.items():
        got = result[name]
        if want is None or isinstance(want, int):
            assert got == want, name
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), name
    ordered = sorted(values)
    for name, q in QUANTILES.items():
        if name in result:
            assert rank_error(ordered, result[name], q) <= result["rank_error"], name


# -- options: parsed, never evaluated -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("temp>20", Filter("temp", ">", 20.0)),
        ("temp >= -3.5", Filter("temp", ">=", -3.5)),
        ("site = north", Filter("site", "=", "north")),
        ("site == 'New York'", Filter("site", "=", "New York")),
        ('code != "007"', Filter("code", "!=", "007")),
        ("load<=1e3", Filter("load", "<=", 1000.0)),
        ("room name<5", Filter("room name", "<", 5.0)),
        ("note=", None),
        ("note=''", Filter("note", "=", "")),
        ("a=b=c", Filter("a", "=", "b=c")),
        ("temp", None),
        (">5", None),
        ("temp ~ 5", None),
        ("temp >> 5", None),
        ("temp > '>5'", Filter("temp", ">", ">5")),
        ("__import__('os').system('id')", None),
        ("x > nan", Filter("x", ">", "nan")),  # not a finite number: compared as text
    ],
)
def test_where_filters_parse_into_column_operator_literal(
    text: str, expected: Filter | None
) -> None:
    if expected is None:
        with pytest.raises(UsageError):
            parse_where(text)
    else:
        assert parse_where(text) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300.0),
        ("30s", 30.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("1d", 86400.0),
        ("2w", 1209600.0),
    ],
)
def test_every_widths(text: str, seconds: float) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["5", "m", "-5m", "0s", "5 minutes", "1e3s"])
def test_bad_every_widths_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_every(text)


def test_analytics_options_are_checked_before_anything_runs() -> None:
    kind = get_kind("analytics")
    params: dict[str, Any] = {
        "op": "groupby",
        "by": "site",
        "aggs": "mean,p90",
        "where": ["temp>20"],
    }
    kind.check(params)
    assert params["by"] == ["site"] and params["aggs"] == ["mean", "p90"]
    assert params["filters"] == [{"column": "temp", "op": ">", "value": 20.0}]
    for bad in (
        {"op": "pivot"},
        {"op": "groupby"},
        {"op": "window", "time_col": "time"},
        {"op": "window", "time_col": "time", "every": "5 parsecs"},
        {"op": "describe", "by": "site"},
        {"op": "groupby", "by": "site", "aggs": "median"},
        {"where": ["temp >> 5"]},
        {"lang": "eng"},
    ):
        with pytest.raises(UsageError):
            kind.check(dict(bad))


# -- the merge, pure ------------------------------------------------------------------------


def random_splits(rng: random.Random, values: list[float], parts: int) -> list[list[float]]:
    cuts = sorted(rng.randint(0, len(values)) for _ in range(parts - 1))
    edges = [0, *cuts, len(values)]
    return [values[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("seed", range(12))
def test_moments_merged_from_any_split_equal_one_pass(seed: int) -> None:
    rng = random.Random(seed)
    offset = rng.choice([0.0, 1e6, -3e9])  # large offsets: where naive variance breaks
    values = [
        offset + rng.gauss(0, rng.choice([1e-3, 1.0, 1e4])) for _ in range(rng.randint(2, 3000))
    ]
    chunks = random_splits(rng, values, rng.randint(1, 9))
    merged = merge_all(Moments.of(chunk) for chunk in chunks)
    stats = merged.stats()
    expected = reference(values)
    assert stats["count"] == expected["count"]
    for name in ("sum", "mean", "std", "min", "max"):
        assert stats[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize("seed", range(12))
def test_quantiles_from_summaries_stay_within_the_stated_rank_error(seed: int) -> None:
    rng = random.Random(100 + seed)
    n = rng.choice([50, 900, 5000, 40000])
    if seed % 3 == 0:
        values = [float(rng.randint(0, 20)) for _ in range(n)]  # heavy ties
    else:
        values = [rng.expovariate(0.1) for _ in range(n)]
    chunks = [c for c in random_splits(rng, values, rng.randint(1, 8)) if c]
    summaries = [RankSummary.from_partial(summarize(sorted(c)), len(c)) for c in chunks]
    bound = rank_error_bound(summaries)
    widths = [
        math.ceil((len(c) - 1) / (SUMMARY_POINTS - 1)) - 1 if len(c) > SUMMARY_POINTS else 0
        for c in chunks
    ]
    assert bound <= (3 * sum(widths) + 1) // 2  # the a-priori bound of the module docstring
    ordered = sorted(values)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0):
        value = quantile(summaries, q)
        assert value is not None
        assert rank_error(ordered, value, q) <= bound, (q, bound)
        if bound == 0:  # every chunk shipped all of its values: exact
            assert value == ordered[target_rank(q, n) - 1]


def test_small_data_gives_exact_quantiles_and_big_data_a_small_bound() -> None:
    rng = random.Random(5)
    small = [[rng.random() for _ in range(300)] for _ in range(4)]
    summaries = [RankSummary.from_partial(summarize(sorted(c)), len(c)) for c in small]
    assert rank_error_bound(summaries) == 0
    big = [[rng.random() for _ in range(50_000)] for _ in range(4)]
    summaries = [RankSummary.from_partial(summarize(sorted(c)), len(c)) for c in big]
    assert 0 < rank_error_bound(summaries) <= 0.0016 * 200_000  # about 0.15 % of N


# -- the runner, run here ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["analytics_runner.py", "ocr_runner.py"])
def test_runners_are_standalone_python_3_8(name: str) -> None:
    """Node-side runners parse as Python 3.8 and import no edgectl (analytics: stdlib only)."""
    tree = ast.parse((RUNNER.parent / name).read_text(), feature_version=(3, 8))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not [m for m in imported if m.split(".")[0] == "edgectl"]
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in imported)
    if name == "ocr_runner.py":  # its own dependencies come in through importlib, at start
        source = (RUNNER.parent / name).read_text()
        assert 'import_module("pytesseract")' in source and 'import_module("PIL.Image")' in source


def run_runner(
    directory: Path, task_id: str, inputs: list[Path], taken: tuple[int, ...] = (), **config: Any
) -> dict:
    """The partial the node-side runner writes for these inputs (run with this python);
    `taken`: inputs edgectl took back before the runner started."""
    task = directory / task_id
    task.mkdir(parents=True)
    for index in taken:
        (task / "claims" / str(index)).mkdir(parents=True)
    (task / "analytics_runner.py").write_bytes(RUNNER.read_bytes())
    full = {"op": "describe", "by": [], "aggs": [], "where": [], "columns": [], **config}
    full["inputs"] = [{"name": p.name, "path": str(p)} for p in inputs]
    (task / "analytics_task.json").write_text(json.dumps(full))
    done = subprocess.run(
        [sys.executable, "-I", "analytics_runner.py", "analytics_task.json"],
        cwd=task,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((task / "out" / f"partial-{task_id}.json").read_text())


def test_the_runner_skips_inputs_taken_back_and_lists_them(tmp_path: Path) -> None:
    paths, _ = make_files(tmp_path / "data", 3, 300)
    partial = run_runner(tmp_path, "t1", paths, taken=(1,))
    assert [f["name"] for f in partial["files"]] == [paths[0].name, paths[2].name]
    assert (tmp_path / "t1" / "skipped").read_text() == "1\n"
    whole = run_runner(tmp_path, "t2", [paths[0], paths[2]])
    assert partial["rows_read"] == whole["rows_read"]


def test_runner_reads_csv_jsonl_gzip_filters_rows_and_reports_bad_input(tmp_path: Path) -> None:
    paths, rows = make_files(tmp_path / "data", 3, 400)
    broken = tmp_path / "data" / "broken.jsonl"
    broken.write_text('{"temp": 5}\nnot json\n[1, 2]\n{"temp": "warm", "load": 3}\n')
    missing = tmp_path / "data" / "gone.csv"
    filters = [parse_where("load>=10").to_dict(), parse_where("site!=east").to_dict()]
    first = run_runner(tmp_path, "t1", paths[:2], where=filters)
    second = run_runner(tmp_path, "t2", [paths[2], broken, missing], where=filters)
    document = merge_partials([first, second], {"op": "describe"}, 5)
    kept = [r for r in rows if r["load"] >= 10 and r["site"] != "east"]
    columns = {c["column"]: c for c in document["columns"]}
    assert set(columns) == {"time", "temp", "load", "energy"}
    assert_matches(columns["energy"], [r["energy"] for r in kept])
    assert_matches(columns["load"], [float(r["load"]) for r in kept])
    # "warm" is text; rows with temp missing are counted as missing.
    assert columns["temp"]["non_numeric"] == 0  # the broken file's rows fail `load>=10`...
    assert document["text_columns"] == [{"column": "site", "values": len(kept)}]
    assert document["bad_records"] == 2 and document["complete"] is False
    assert [f["name"] for f in document["inputs"]["failed"]] == ["gone.csv"]
    assert "FileNotFoundError" in document["inputs"]["failed"][0]["error"]
    temps = [r["temp"] for r in kept if r["temp"] is not None]
    assert columns["temp"]["missing"] == len(kept) - len(temps)
    assert_matches(columns["temp"], temps)


def test_runner_groupby_and_window_merge_to_the_reference(tmp_path: Path) -> None:
    paths, rows = make_files(tmp_path / "data", 3, 1500)
    grouped = [
        run_runner(
            tmp_path / "g",
            f"t{i}",
            [p],
            op="groupby",
            by=["site"],
            aggs=["count", "mean", "std", "max", "p90"],
        )
        for i, p in enumerate(paths)
    ]
    params = {"op": "groupby", "by": ["site"], "aggs": ["count", "mean", "std", "max", "p90"]}
    document = merge_partials(grouped, params, 3)
    assert [g["key"]["site"] for g in document["groups"]] == ["east", "north", "south"]
    for group in document["groups"]:
        mine = [r["energy"] for r in rows if r["site"] == group["key"]["site"]]
        got = group["values"]["energy"]
        assert group["rows"] == len(mine)
        assert got["count"] == len(mine)
        assert got["mean"] == pytest.approx(statistics.fmean(mine), rel=1e-9)
        assert got["std"] == pytest.approx(statistics.stdev(mine), rel=1e-9)
        assert got["max"] == max(mine)
        assert rank_error(sorted(mine), got["p90"], 0.9) <= got["rank_error"]
    every = 300.0
    windowed = [
        run_runner(
            tmp_path / "w",
            f"t{i}",
            [p],
            op="window",
            time_col="time",
            every=every,
            aggs=["count", "sum", "min"],
        )
        for i, p in enumerate(paths)
    ]
    params = {"op": "window", "time_col": "time", "every": "5m", "aggs": ["count", "sum", "min"]}
    document = merge_partials(windowed, params, 3)
    buckets: dict[float, list[float]] = {}
    for row in rows:
        if row["temp"] is not None:
            buckets.setdefault(math.floor(row["time"] / every) * every, []).append(row["temp"])
    assert [g["key"]["start"] for g in document["groups"]] == sorted(buckets)
    first = document["groups"][0]
    assert first["key"]["bucket"] == "2024-05-01T10:00:00Z"
    for group in document["groups"]:
        temps = buckets[group["key"]["start"]]
        assert group["values"]["temp"]["count"] == len(temps)
        assert group["values"]["temp"]["sum"] == pytest.approx(math.fsum(temps), rel=1e-9)
        assert group["values"]["temp"]["min"] == min(temps)


# -- through the fleet ----------------------------------------------------------------------


def submit(home: Path, *args: str) -> dict:
    result = run_cli(home, "job", "submit", "analytics", *args, "--wait", "--json")
    assert result.exit_status == 0, result.stderr + result.stdout
    assert result.json["state"] == "done", result.json
    return result.json


def uploaded_bytes(jobs: Jobs, job_id: str) -> int:
    """What the executor sent to the nodes' stdin in the job's run (its event)."""
    texts = [e["text"] for e in jobs.logs(job_id)]
    counts = [int(m.group(1)) for t in texts if (m := re.match(r"(\d+) bytes uploaded", t))]
    assert counts, texts
    return sum(counts)


@pytest.mark.fleet
def test_describe_split_over_four_nodes_equals_one_pass(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    _, rows = make_files(tmp_path / "data", 8, 5000)
    document = submit(home, str(tmp_path / "data"), "--on", "n*", "--where", "load>2")
    assert {t["node"] for t in document["tasks"]} == {n.name for n in fleet.nodes}
    merged = json.loads((home / "results" / document["id"] / "analytics.json").read_text())
    # One partial per task done; a tail copy that lost its race (cancelled) adds none.
    done = [t for t in document["tasks"] if t["state"] == "done"]
    assert merged["complete"] is True and merged["partials"] == len(done)
    assert sorted(name for t in done for name in t["inputs"]) == sorted(
        p.name for p in (tmp_path / "data").iterdir()
    )
    kept = [r for r in rows if r["load"] > 2]
    assert merged["rows"] == len(kept) and merged["rows_read"] == len(rows)
    columns = {c["column"]: c for c in merged["columns"]}
    for name in ("energy", "load"):
        assert_matches(columns[name], [float(r[name]) for r in kept])
        assert columns[name]["rank_error"] > 0  # summarised: 5000 values a task
    # Times are numbers in the CSV files and ISO texts in the JSON lines.
    assert columns["time"]["count"] + columns["time"]["non_numeric"] == len(kept)
    assert_matches(columns["temp"], [r["temp"] for r in kept if r["temp"] is not None])
    assert columns["temp"]["missing"] == sum(r["temp"] is None for r in kept)
    # The same result through `job results`: JSON, table and CSV.
    shown = run_cli(home, "job", "results", document["id"], "--json")
    assert shown.exit_status == 0 and shown.json["analytics"]["columns"] == merged["columns"]
    table = run_cli(home, "job", "results", document["id"])
    assert table.stdout.splitlines()[0].split()[:4] == ["column", "count", "missing", "non_numeric"]
    as_csv = run_cli(home, "job", "results", document["id"], "--format", "csv")
    parsed = list(csv.DictReader(as_csv.stdout.splitlines()))
    energy = next(r for r in parsed if r["column"] == "energy")
    assert float(energy["mean"]) == columns["energy"]["mean"]  # full precision


@pytest.mark.fleet
def test_groupby_and_window_over_the_fleet(fleet: Fleet, tmp_path: Path) -> None:
    home = make_home(tmp_path, fleet)
    paths, rows = make_files(tmp_path / "data", 4, 3000)
    document = submit(
        home,
        *map(str, paths),
        "--on",
        "n*",
        "--op",
        "groupby",
        "--by",
        "site",
        "--agg",
        "mean,std,p50,p99",
    )
    merged = json.loads((home / "results" / document["id"] / "analytics.json").read_text())
    for group in merged["groups"]:
        temps = [
            r["temp"] for r in rows if r["site"] == group["key"]["site"] and r["temp"] is not None
        ]
        got = group["values"]["temp"]
        assert got["mean"] == pytest.approx(statistics.fmean(temps), rel=1e-9)
        assert got["std"] == pytest.approx(statistics.stdev(temps), rel=1e-9)
        for name in ("p50", "p99"):
            assert rank_error(sorted(temps), got[name], QUANTILES[name]) <= got["rank_error"]
    table = run_cli(home, "job", "results", document["id"])
    assert "temp.p99" in table.stdout.splitlines()[0]
    document = submit(
        home,
        *map(str, paths),
        "--on",
        "n*",
        "--op",
        "window",
        "--time-col",
        "time",
        "--every",
        "1h",
    )
    merged = json.loads((home / "results" / document["id"] / "analytics.json").read_text())
    hours: dict[float, int] = {}
    for row in rows:
        start = math.floor(row["time"] / 3600) * 3600.0
        hours[start] = hours.get(start, 0) + 1
    assert {g["key"]["start"]: g["rows"] for g in merged["groups"]} == hours


@pytest.mark.fleet
def test_data_local_run_moves_no_input_bytes(fleet: Fleet, tmp_path: Path) -> None:
    """Files already on a node: only the runner goes out and only the partial comes back."""
    home = make_home(tmp_path, fleet)
    node = fleet.nodes[0]
    data = Path(node.workdir) / "sensor-data"
    paths, rows = make_files(data, 4, 6000)
    size = sum(p.stat().st_size for p in paths)
    assert size > 500_000
    jobs = Jobs(EdgeFleet(home))
    local = jobs.submit(
        "analytics", [], selector=node.name, remote_paths=[f"{data}/part*"], params={}
    )
    assert jobs.run(local.id).value == "done"
    sent = uploaded_bytes(jobs, local.id)
    tasks = jobs.show(local.id)["tasks"]
    where, files = jobs.results(local.id)
    fetched = sum(f["size"] for f in files)
    print(f"\ndata-local: {size} input bytes on {node.name}; {sent} bytes sent, {fetched} fetched")
    assert sent < 40_000 * len(tasks)  # runner + task file + run.sh per task, no data
    assert sent < size / 10
    merged = json.loads((where / "analytics.json").read_text())
    columns = {c["column"]: c for c in merged["columns"]}
    assert_matches(columns["energy"], [r["energy"] for r in rows])
    # The same files uploaded: the counter does see input bytes.
    uploaded = jobs.submit("analytics", [str(data)], selector=node.name, params={})
    jobs.run(uploaded.id)
    assert uploaded_bytes(jobs, uploaded.id) > size
