"""Benchmark: 300 nodes behind one sshd with the stock `MaxStartups 10:30:100`.

Every node must be reached (the pool retries handshake drops with bounded backoff). The
ratio printed is the wall time of the 300-node probe over a 10-node probe of the same
sshd measured in the same run (the floor: no drops at all), median of interleaved rounds.

    python -m tests.bench.bench_maxstartups [--nodes 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from tests.fleet import Fleet, running_fleet
from tests.hostile.test_fanout import STOCK_MAX_STARTUPS, many_names_one_sshd, probe_all


def main() -> None:
    """Run interleaved rounds and print reached counts, wall times and the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forks", type=int, default=100)
    args = parser.parse_args()
    with running_fleet(1, max_startups=STOCK_MAX_STARTUPS) as fleet:
        base = Path(tempfile.mkdtemp(prefix="edgectl-bench-maxstartups-"))
        try:
            run_rounds(args, fleet, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def run_rounds(args: argparse.Namespace, fleet: Fleet, base: Path) -> None:
    """Interleave the many-node probe and the 10-node floor; print the figures."""
    many = many_names_one_sshd(base / "many", fleet, args.nodes)
    few = many_names_one_sshd(base / "few", fleet, 10)
    walls_many: list[float] = []
    walls_few: list[float] = []
    missed = 0
    for round_number in range(args.rounds):
        reached, total, took = probe_all(many, args.forks)
        missed += total - reached
        walls_many.append(took)
        _, _, took_few = probe_all(few, args.forks)
        walls_few.append(took_few)
        print(f"round {round_number + 1}: {reached}/{total} reached in {took:.2f}s")
    ratio = statistics.median(walls_many) / statistics.median(walls_few)
    print(
        f"{args.nodes} nodes behind MaxStartups {STOCK_MAX_STARTUPS}: "
        f"unreached {missed} over {args.rounds} rounds; median {statistics.median(walls_many):.2f}s, "
        f"10-node floor {statistics.median(walls_few):.2f}s, ratio {ratio:.1f}"
    )


if __name__ == "__main__":
    main()
