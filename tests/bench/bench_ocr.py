"""OCR throughput: N rendered pages through edgectl over a loopback fleet vs tesseract locally.

Run: python tests/bench/bench_ocr.py [--pages 100] [--nodes 2] [--repeats 3]

The local baseline is the fastest plain way to use this machine: GNU parallel running one
`tesseract PAGE OUT -l eng` per core with OMP_THREAD_LIMIT=1. edgectl runs
`job submit ocr PAGES --on n* --wait` (defaults: eng, automatic layout, --preprocess auto)
over sshd nodes on this same machine, so both share the same cores; edgectl also ships
every page to a node and its text back, verified. The pages are rendered here (DejaVu
Sans, 200 dpi, 25 lines each) by the OCR venv that the nodes use, made the way the `ocr`
playbook makes it. Medians of interleaved runs; the score is edgectl's throughput over
local parallel's (target >= 0.85).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgectl import Fleet as EdgeFleet
from tests.cli import edgectl_argv
from tests.fleet import running_fleet
from tests.test_ocr import LATIN_FONT, build_runtime, provide_runtime

RENDER = """
import random, sys
from PIL import Image, ImageDraw, ImageFont
out, count, font_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
words = ("edge node camera delivery note pallet warehouse office line report device "
         "address inventory playbook runtime page text compare serial number key trust "
         "evening morning north south quick brown dog jumped over lazy fox").split()
font = ImageFont.truetype(font_path, 30)
for index in range(count):
    rng = random.Random(index)
    page = Image.new("L", (1240, 1400), 255)
    draw = ImageDraw.Draw(page)
    for line in range(25):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(6, 10)))
        draw.text((80, 70 + line * 50), text.capitalize() + ".", font=font, fill=0)
    page.point(lambda v: 255 if v > 140 else 0).convert("1").save(
        f"{out}/page{index:04d}.png", dpi=(200, 200))
"""


def run_local(pages: Path, out: Path, cores: int) -> float:
    """tesseract on every page with GNU parallel, one per core; wall seconds."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    names = sorted(str(p) for p in pages.iterdir())
    started = time.perf_counter()
    subprocess.run(
        [
            "parallel",
            "--will-cite",
            "-j",
            str(cores),
            f"tesseract {{}} {out}/{{/.}} -l eng >/dev/null 2>&1",
            ":::",
            *names,
        ],
        check=True,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )
    elapsed = time.perf_counter() - started
    produced = len(list(out.glob("*.txt")))
    if produced != len(names):
        raise SystemExit(f"local parallel produced {produced} of {len(names)} texts")
    return elapsed


def most_at_once(job: dict) -> int:
    """The most tasks of the job that were running at the same moment."""
    edges = []
    for task in job["tasks"]:
        for attempt in task["attempts"]:
            if attempt.get("started") and attempt.get("finished"):
                edges += [(attempt["started"], 1), (attempt["finished"], -1)]
    running = most = 0
    for _, step in sorted(edges):
        running += step
        most = max(most, running)
    return most


def run_edgectl(home: Path, pages: Path, count: int, concurrency: list[int]) -> float:
    """edgectl job submit ocr --wait over the fleet; wall seconds."""
    started = time.perf_counter()
    proc = subprocess.run(
        edgectl_argv(
            home,
            "job",
            "submit",
            "ocr",
            str(pages),
            "--on",
            "n*",
            "--wait",
            "--json",
        ),
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"edgectl failed: {proc.stderr[-500:]}")
    job = json.loads(proc.stdout)
    concurrency.append(most_at_once(job))
    texts = list((home / "results" / job["id"]).glob("page*.txt"))
    if len(texts) != count:
        raise SystemExit(f"edgectl produced {len(texts)} of {count} texts")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=100)
    # Each node takes as many tasks as it has free cores (cores less its load), and all the
    # nodes share this machine: how many ran at once is printed beside the result. On a
    # busy machine one node gets fewer slots than `parallel -j cores` runs processes.
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for program in ("parallel", "tesseract"):
        if shutil.which(program) is None:
            raise SystemExit(f"{program} is not installed")
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp, running_fleet(args.nodes) as fleet:
        work = Path(tmp)
        os.chmod(work, 0o755)
        runtime = build_runtime(fleet.session.base)
        provide_runtime(fleet, runtime)
        pages = work / "pages"
        pages.mkdir()
        runtime.draw(RENDER, str(pages), str(args.pages), LATIN_FONT)
        home = work / "home"
        edge = EdgeFleet(home)
        edge.add_nodes(fleet.nodes)
        fleet.write_known_hosts(home / "known_hosts")
        edge.remove_nodes(["local"])
        local_times: list[float] = []
        edge_times: list[float] = []
        concurrency: list[int] = []
        load = os.getloadavg()[0]
        for _ in range(args.repeats):
            local_times.append(run_local(pages, work / "local-out", cores))
            edge_times.append(run_edgectl(home, pages, args.pages, concurrency))
    local, edge_median = statistics.median(local_times), statistics.median(edge_times)
    print(
        f"{args.pages} pages (1240x1400, 25 lines) on {cores} cores, {args.repeats} interleaved runs each"
    )
    print(
        f"tesseract via GNU parallel -j {cores}, OMP_THREAD_LIMIT=1   median {local:6.2f} s"
        f"  ({args.pages / local:5.2f} pages/s)   runs {', '.join(f'{t:.2f}' for t in local_times)}"
    )
    print(
        f"edgectl job submit ocr over {args.nodes} loopback nodes      median {edge_median:6.2f} s"
        f"  ({args.pages / edge_median:5.2f} pages/s)   runs {', '.join(f'{t:.2f}' for t in edge_times)}"
    )
    print(
        f"edgectl ran at most {max(concurrency)} tasks at once; load average before: {load:.2f}"
        " (other work on the machine makes both numbers noisy)"
    )
    ratio = local / edge_median
    verdict = "PASS" if ratio >= 0.85 else "MISS"
    print(f"edgectl throughput / local parallel's = {ratio:.2f}  (target >= 0.85: {verdict})")


if __name__ == "__main__":
    main()
