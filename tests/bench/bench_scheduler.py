"""Scheduler quality on simulated fleets: makespan over a lower bound, per policy, 30 seeds.

Run: python tests/bench/bench_scheduler.py [--seeds N] [--jobs J]
Each seed builds one scenario (6-12 nodes of 1x/2x/4x cores, 200-600 lognormal tasks in three
jobs, background load, a node slowing 5x and a node dropping out mid-run) and runs every
policy on it. Prints, per policy, the mean, p95 (nearest rank) and worst of makespan / lower
bound and the mean share of work computed twice because of speculative copies, then checks
the targets for edgectl (mean <= 1.12, p95 <= 1.25, duplicated work <= 10% on every seed,
clearly better than both naive policies). Scenarios and bound: see `edgectl/sim.py`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgectl.sim import POLICIES, SimResult, make_scenario, simulate

TARGET_MEAN = 1.12
TARGET_P95 = 1.25
TARGET_COPIES = 0.10
CLEARLY_BETTER = 0.8  # edgectl's mean ratio at most this share of a naive policy's


def run_seed(seed: int) -> list[SimResult]:
    """Every policy on the scenario of one seed."""
    scenario = make_scenario(seed)
    return [simulate(scenario, policy) for policy in POLICIES]


def p95(values: list[float]) -> float:
    """The 95th percentile by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def main() -> int:
    """Run the seeds, print the table and the target checks; exit 1 on a miss."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=None, help="worker processes")
    args = parser.parse_args()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        per_seed = list(pool.map(run_seed, range(args.seeds)))
    results = {
        policy: [r for rs in per_seed for r in rs if r.policy == policy] for policy in POLICIES
    }
    print(f"{args.seeds} seeds; ratio = makespan / lower bound")
    print(f"{'policy':<16}{'mean':>8}{'p95':>8}{'worst':>8}{'dup work %':>12}")
    summary = {}
    for policy, rows in results.items():
        ratios = [r.ratio for r in rows]
        copies = [r.duplicated_work for r in rows]
        summary[policy] = (statistics.mean(ratios), p95(ratios), max(copies))
        print(
            f"{policy:<16}{statistics.mean(ratios):>8.3f}{p95(ratios):>8.3f}{max(ratios):>8.3f}"
            f"{100 * statistics.mean(copies):>12.2f}"
        )
    mean, high, copies = summary["edgectl"]
    naive = min(summary["round-robin"][0], summary["static-split"][0])
    checks = [
        (f"edgectl mean {mean:.3f} <= {TARGET_MEAN}", mean <= TARGET_MEAN),
        (f"edgectl p95 {high:.3f} <= {TARGET_P95}", high <= TARGET_P95),
        (
            f"edgectl duplicated work {100 * copies:.1f}% <= {100 * TARGET_COPIES:.0f}% on every seed",
            copies <= TARGET_COPIES,
        ),
        (
            f"edgectl mean <= {CLEARLY_BETTER} x best naive mean {naive:.3f}",
            mean <= CLEARLY_BETTER * naive,
        ),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
