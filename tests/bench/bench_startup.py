"""Start-up and inventory speed: `edgectl --version`, `inventory list --json`, CSV import.

Run: python tests/bench/bench_startup.py [--runs N]
Prints medians, and each as a ratio to a bare `python -c pass` measured in the same run
(the machine is shared and noisy, so the ratio is the number to compare across runs).
Targets on a 2-core machine: --version <= 150 ms, list of 1,000 nodes <= 300 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of a command, in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def write_csv(path: Path, count: int) -> None:
    """A CSV inventory of `count` nodes."""
    with path.open("w") as out:
        out.write("name,host,port,user,groups,labels\n")
        for i in range(count):
            out.write(
                f"node-{i:05d},10.{i // 65536}.{i // 256 % 256}.{i % 256},22,edge,site{i % 7};cams,arch=arm64;rack={i % 40}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=11)
    runs = parser.parse_args().runs
    edgectl = [sys.executable, "-m", "edgectl"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        base_env = {**os.environ, "EDGECTL_HOME": str(Path(tmp) / "empty")}
        floor = median_ms([sys.executable, "-c", "pass"], base_env, runs)
        rows.append(("python -c pass (floor)", floor))
        rows.append(("edgectl --version", median_ms([*edgectl, "--version"], base_env, runs)))
        for count in (1_000, 10_000):
            home = Path(tmp) / f"home{count}"
            csv_path = Path(tmp) / f"nodes{count}.csv"
            write_csv(csv_path, count)
            env = {**os.environ, "EDGECTL_HOME": str(home)}
            started = time.perf_counter()
            subprocess.run([*edgectl, "inventory", "import", str(csv_path)], env=env, check=True)
            rows.append(
                (
                    f"inventory import ({count:,}-node CSV, once)",
                    (time.perf_counter() - started) * 1000,
                )
            )
            rows.append(
                (
                    f"inventory list --json ({count:,} nodes)",
                    median_ms([*edgectl, "inventory", "list", "--json"], env, runs),
                )
            )
            rows.append(
                (
                    f"inventory list '@site3,&rack=1*' ({count:,})",
                    median_ms([*edgectl, "inventory", "list", "@site3,&rack=1*"], env, runs),
                )
            )
        width = max(len(name) for name, _ in rows)
        print(f"{'command'.ljust(width)}  median ms  x floor")
        for name, ms in rows:
            print(f"{name.ljust(width)}  {ms:9.1f}  {ms / floor:7.2f}")


if __name__ == "__main__":
    main()
