"""Run the hostile suite and print its figures, each counted from the attacks really run.

    python -m tests.hostile.report [--details] [pytest arguments...]

The suite's tests append one JSON line per observation to a figures file (see
conftest.Figures); this script runs pytest on tests/hostile with that file set, then sums
the lines into a table. Its exit status is pytest's, or 1 when a figure that must be 0
is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.hostile.conftest import FIGURES_ENV

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

# (figure, what the table calls it): tried and passed.
TRIED = [
    ("attack", "attacks tried / refused or capped"),
    ("fault", "faults injected / survived"),
    ("crash point", "controller SIGKILL points / state sound after it"),
    ("cron runs at once", "concurrent cron-style processes / all exited 0"),
]
# (figure, what the table calls it): counts that must be 0.
ZERO = [
    ("bytes outside the results root", "bytes written outside the results root"),
    ("canary secret occurrences", "canary secret occurrences"),
    ("canary commands run", "canary commands run (hostile input)"),
    ("lost updates", "lost updates"),
    ("unreadable files after a crash", "unreadable files after a crash"),
    ("done without verified results", "tasks done without verified results"),
    ("results stored twice", "results stored twice"),
    ("task directories left on nodes", "task directories left on nodes after the kills"),
]

# Shown for information.
INFO = [
    (
        "given-up markers on nodes",
        "given-up attempts' markers (a claim only; a later cleanup removes them)",
    )
]


def run_suite(figures: Path, pytest_args: list[str]) -> int:
    """pytest over tests/hostile with the figures file set; its exit status."""
    env = {**os.environ, FIGURES_ENV: str(figures)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE), *pytest_args]
    return subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode


def summarise(records: list[dict[str, Any]]) -> tuple[list[tuple[str, str, str]], bool]:
    """Table rows (figure, value, verdict) and whether every figure is as it must be."""
    tried: dict[str, int] = defaultdict(int)
    passed: dict[str, int] = defaultdict(int)
    totals: dict[str, int] = defaultdict(int)
    for record in records:
        tried[record["figure"]] += 1
        passed[record["figure"]] += bool(record["ok"])
        totals[record["figure"]] += int(record["count"])
    rows, sound = [], True
    for figure, label in TRIED:
        if figure == "cron runs at once":
            value = f"{totals[figure]} / {passed[figure] and totals[figure]}"
        else:
            value = f"{tried[figure]} / {passed[figure]}"
        good = tried[figure] > 0 and passed[figure] == tried[figure]
        sound &= good
        rows.append((label, value, "ok" if good else "FAIL"))
    for figure, label in ZERO:
        good = tried[figure] > 0 and totals[figure] == 0
        sound &= good
        checks = f"  ({tried[figure]} checks)"
        rows.append((label, f"{totals[figure]}{checks}", "ok" if good else "FAIL"))
    for figure, label in INFO:
        rows.append((label, f"{totals[figure]}  ({tried[figure]} checks)", "info"))
    return rows, sound


def main(argv: list[str]) -> int:
    """Run, then print the table (and with --details every observation)."""
    details = "--details" in argv
    pytest_args = [a for a in argv if a != "--details"]
    with tempfile.TemporaryDirectory(prefix="edgectl-hostile-") as directory:
        figures = Path(directory) / "figures.jsonl"
        figures.touch()
        status = run_suite(figures, pytest_args)
        records = [json.loads(line) for line in figures.read_text().splitlines() if line]
    rows, sound = summarise(records)
    width = max(len(label) for label, _, _ in rows)
    print()
    print(f"{'FIGURE'.ljust(width)}  {'VALUE':<18}  VERDICT")
    for label, value, verdict in rows:
        print(f"{label.ljust(width)}  {value:<18}  {verdict}")
    if details:
        print()
        for record in records:
            mark = "ok " if record["ok"] else "BAD"
            print(f"{mark} {record['figure']}: {record['name']} ({record['count']})")
    return status or (0 if sound else 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
