"""Probe speed against a floor: `edgectl probe` over a fleet of real sshd on loopback.

Run: python tests/bench/bench_probe.py [--nodes 200] [--repeats 3] [--forks 100]

Compared in the same run (the machine is shared and noisy, so ratios are the numbers):

* floor: a bare asyncssh script, run as its own process, that connects to every node
  (at most --forks at once), checks host keys against the same known_hosts file with the
  same client key, runs `cat /proc/loadavg` once and closes;
* edgectl: `python -m edgectl --home HOME probe --json --forks N --timeout 30`, as a
  subprocess over the same fleet (start-up, connect, probe script, parse, facts write, JSON).

Each measures wall time and the controller's CPU (user + sys of the child process, from
os.wait4). Floor and edgectl runs are interleaved (ABBA order), after one untimed warm-up
of each, and medians are reported. Spec targets: edgectl wall <= 1.25x and CPU <= 1.5x
the floor. An informational third row runs the floor with edgectl's own probe script, so
the cost of the remote work (which shares this machine's cores) can be told apart from
controller overhead.

Then, in this process: one ConnectionPool, a first probe round over every node and a
second round on the same pool. Target: round two <= 0.25x round one, with no new
connection opened.

This is a measurement: a missed target prints MISS, the exit status stays 0. A node that
fails to answer is an error (exit status 1), as the numbers would mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgectl.inventory.model import Node
    from tests.fleet import Fleet as SshdFleet

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0  # seconds per node, for every step, in both edgectl and the floor
WALL_TARGET = 1.25
CPU_TARGET = 1.5
REUSE_TARGET = 0.25
FLOOR_COMMAND = "cat /proc/loadavg"

# The floor: what a careful hand-written asyncssh script does, and nothing more. Known hosts
# and the client key are read once, as any script would; each node gets one connection and
# one exec under the same concurrency limit as edgectl's --forks.
FLOOR_SCRIPT = r"""
import asyncio
import json
import sys

import asyncssh


async def main(spec):
    known_hosts = asyncssh.read_known_hosts(spec["known_hosts"])
    client_key = asyncssh.read_private_key(spec["key"])
    limit = asyncio.Semaphore(spec["forks"])
    timeout = spec["timeout"]

    async def one(node):
        async with limit:
            async with asyncssh.connect(
                node["host"],
                port=node["port"],
                username=node["user"],
                client_keys=[client_key],
                known_hosts=known_hosts,
                connect_timeout=timeout,
            ) as conn:
                result = await conn.run(spec["command"], check=True, timeout=timeout)
                return node["name"], len(result.stdout)

    outcomes = await asyncio.gather(*(one(n) for n in spec["nodes"]), return_exceptions=True)
    failed = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    empty = [o[0] for o in outcomes if not isinstance(o, BaseException) and o[1] == 0]
    ok = len(outcomes) - len(failed) - len(empty)
    print(json.dumps({"ok": ok, "failed": failed[:5], "empty": empty[:5]}))
    return 0 if ok == len(outcomes) else 1


with open(sys.argv[1], encoding="utf-8") as handle:
    sys.exit(asyncio.run(main(json.load(handle))))
"""


class BenchError(RuntimeError):
    """The benchmark could not measure what it meant to (a node did not answer)."""


@dataclass
class Sample:
    """One timed child process: wall seconds and CPU seconds (user + sys)."""

    wall: float
    cpu: float


def timed_child(argv: Sequence[str], out_path: Path) -> tuple[Sample, int, str]:
    """Run argv with stdout to a file; return its wall and CPU, exit status and stdout."""
    err_path = out_path.with_suffix(".err")
    with out_path.open("wb") as out, err_path.open("wb") as err, open(os.devnull, "rb") as null:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=null, stdout=out, stderr=err, cwd=ROOT)
        # wait4 rather than wait: it hands back this child's own rusage.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    errors = err_path.read_text(encoding="utf-8", errors="replace").strip()
    if errors:
        print(errors[-2000:], file=sys.stderr)
    text = out_path.read_text(encoding="utf-8", errors="replace")
    return Sample(wall, usage.ru_utime + usage.ru_stime), proc.returncode, text


class Runner:
    """The commands being compared, over one fleet, with their checks."""

    def __init__(self, nodes: Sequence[Node], forks: int, work: Path) -> None:
        from edgectl import Fleet

        self.nodes = list(nodes)
        self.forks = forks
        self.work = work
        self.home = work / "home"
        api = Fleet(self.home)
        api.add_nodes(self.nodes)
        api.remove_nodes(["local"])
        if {n.name for n in api.nodes()} != {n.name for n in self.nodes}:
            raise BenchError("the benchmark home does not hold exactly the fleet's nodes")
        self.known_hosts = self.home / "known_hosts"  # edgectl's own, in its home
        self.floor_path = work / "floor.py"
        self.floor_path.write_text(FLOOR_SCRIPT, encoding="utf-8")
        self.specs: dict[str, Path] = {}

    def floor_spec(self, command: str) -> Path:
        """The floor's input file for one remote command (written once)."""
        path = self.specs.get(command)
        if path is None:
            keys = {n.key for n in self.nodes}
            if len(keys) != 1 or None in keys:
                raise BenchError("the floor expects one client key shared by every node")
            spec: dict[str, Any] = {
                "known_hosts": str(self.known_hosts),
                "key": str(keys.pop()),
                "forks": self.forks,
                "timeout": TIMEOUT,
                "command": command,
                "nodes": [
                    {"name": n.name, "host": n.host, "port": n.port, "user": n.user}
                    for n in self.nodes
                ],
            }
            path = self.work / f"floor-spec-{len(self.specs)}.json"
            path.write_text(json.dumps(spec), encoding="utf-8")
            self.specs[command] = path
        return path

    def floor(self, command: str = FLOOR_COMMAND) -> Sample:
        """One run of the bare asyncssh script; every node must answer."""
        argv = [sys.executable, str(self.floor_path), str(self.floor_spec(command))]
        sample, status, text = timed_child(argv, self.work / "floor.out")
        try:
            report = json.loads(text)
        except json.JSONDecodeError:
            report = None
        if status != 0 or not report or report["ok"] != len(self.nodes):
            raise BenchError(f"floor run failed (exit {status}): {text.strip()[:500]}")
        return sample

    def edgectl(self) -> Sample:
        """One run of `edgectl probe --json`; every node must be reachable."""
        from tests.cli import edgectl_argv

        argv = edgectl_argv(
            self.home,
            "probe",
            "--json",
            "--forks",
            str(self.forks),
            "--timeout",
            f"{TIMEOUT:g}",
        )
        sample, status, text = timed_child(argv, self.work / "edgectl.out")
        try:
            results = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchError(
                f"edgectl probe printed no JSON (exit {status}): {text.strip()[:300]}"
            ) from exc
        names = sorted(r["name"] for r in results)
        down = [f"{r['name']}: {r['reason']}: {r['error']}" for r in results if not r["reachable"]]
        if down or names != sorted(n.name for n in self.nodes) or status != 0:
            raise BenchError(
                f"edgectl probe: {len(down)} of {len(results)} nodes unreachable "
                f"(exit {status}; want {len(self.nodes)} reachable): {down[:5]}"
            )
        return sample


async def reuse_rounds(
    nodes: Sequence[Node], forks: int, fleet: SshdFleet, work: Path
) -> tuple[float, float, float, float, int, int]:
    """Two probe rounds on one pool: (wall1, wall2, cpu1, cpu2, opened1, opened2)."""
    from edgectl.facts.probe import probe_nodes
    from edgectl.transport import ConnectionPool
    from tests.fleet import trusting_options

    options = trusting_options(
        fleet, work, connect_timeout=TIMEOUT, login_timeout=TIMEOUT, command_timeout=TIMEOUT
    )
    walls: list[float] = []
    cpus: list[float] = []
    opened: list[int] = []
    async with ConnectionPool(options, forks=forks) as pool:
        for round_number in (1, 2):
            cpu_started = time.process_time()
            started = time.perf_counter()
            results = await probe_nodes(nodes, pool, TIMEOUT)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu_started)
            opened.append(pool.opened)
            down = [f"{r.name}: {r.reason}: {r.error}" for r in results if not r.reachable]
            if down:
                raise BenchError(
                    f"reuse round {round_number}: {len(down)} nodes unreachable: {down[:5]}"
                )
    return walls[0], walls[1], cpus[0], cpus[1], opened[0], opened[1]


def verdict(ratio: float, target: float) -> str:
    """PASS or MISS against an upper bound."""
    return "PASS" if ratio <= target else "MISS"


def show_runs(name: str, samples: Sequence[Sample]) -> str:
    """Every run of one command, for a look at the noise."""
    runs = "  ".join(f"{s.wall:.2f}s/{s.cpu:.2f}s" for s in samples)
    return f"  {name:<10} {runs}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=200, help="sshd processes to start")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each command")
    parser.add_argument("--forks", type=int, default=100, help="connections at once")
    parser.add_argument(
        "--no-script-floor",
        action="store_true",
        help="skip the informational floor that runs edgectl's probe script",
    )
    args = parser.parse_args()
    if args.nodes < 1 or args.repeats < 1 or args.forks < 1:
        parser.error("--nodes, --repeats and --forks must be at least 1")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # tests.fleet, when run as a script
    try:
        run(args.nodes, args.repeats, args.forks, not args.no_script_floor)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def run(count: int, repeats: int, forks: int, script_floor: bool) -> None:
    """Start the fleet, measure, print."""
    from edgectl.facts.probe import probe_argv
    from edgectl.transport.quoting import quote_argv
    from tests.fleet import running_fleet

    started = time.perf_counter()
    with running_fleet(count) as fleet, tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        startup = time.perf_counter() - started
        work = Path(tmp)
        runner = Runner(fleet.nodes, forks, work)
        fleet.write_known_hosts(runner.known_hosts)
        workdir = fleet.nodes[0].workdir
        # The same command line edgectl sends (its workdir argument aside: node 1's for all).
        probe_command = quote_argv(probe_argv(workdir))

        kinds: dict[str, Callable[[], Sample]] = {"floor": runner.floor, "edgectl": runner.edgectl}
        if script_floor:
            kinds["floor+scr"] = lambda: runner.floor(probe_command)
        for measure in kinds.values():
            measure()  # warm-up: page cache, .pyc files, sshd's first forks
        samples: dict[str, list[Sample]] = {name: [] for name in kinds}
        order = list(kinds)
        for repeat in range(repeats):
            for name in order if repeat % 2 == 0 else reversed(order):
                samples[name].append(kinds[name]())

        reuse_dir = work / "reuse"
        reuse_dir.mkdir()
        wall1, wall2, cpu1, cpu2, opened1, opened2 = asyncio.run(
            reuse_rounds(fleet.nodes, forks, fleet, reuse_dir)
        )

    def med(name: str, field: str) -> float:
        return statistics.median(float(getattr(s, field)) for s in samples[name])

    print(
        f"edgectl probe vs bare asyncssh: {count} nodes (sshd on 127.0.x.y), forks {forks}, "
        f"{repeats} interleaved runs each after a warm-up, medians (fleet up in {startup:.1f} s)"
    )
    print(
        "compares: `python -m edgectl probe --json` (start-up, connect, host-key check, probe "
        "script, parse, facts write) with a bare asyncssh script (same known_hosts, key and "
        f"concurrency; `{FLOOR_COMMAND}` once per node)"
    )
    print(
        "note: the sshd nodes run on this machine, so the commands they run (edgectl's probe "
        "script, or cat) use the same cores as the controller and count in the wall times"
    )
    print()
    labels = {
        "floor": "floor: bare asyncssh, cat /proc/loadavg",
        "edgectl": "edgectl probe --json (CLI)",
        "floor+scr": "info: bare asyncssh, edgectl's probe script",
    }
    width = max(len(labels[name]) for name in samples)
    print(f"{'command'.ljust(width)}  wall s  cpu s (user+sys)")
    for name in samples:
        print(f"{labels[name].ljust(width)}  {med(name, 'wall'):6.2f}  {med(name, 'cpu'):6.2f}")
    print()
    wall_ratio = med("edgectl", "wall") / med("floor", "wall")
    cpu_ratio = med("edgectl", "cpu") / med("floor", "cpu")
    print(
        f"edgectl/floor wall {wall_ratio:5.2f}x  (target <= {WALL_TARGET:.2f}x)  "
        f"{verdict(wall_ratio, WALL_TARGET)}"
    )
    print(
        f"edgectl/floor cpu  {cpu_ratio:5.2f}x  (target <= {CPU_TARGET:.2f}x)  "
        f"{verdict(cpu_ratio, CPU_TARGET)}"
    )
    if "floor+scr" in samples:
        print(
            f"info: edgectl / floor-with-probe-script: wall "
            f"{med('edgectl', 'wall') / med('floor+scr', 'wall'):.2f}x, cpu "
            f"{med('edgectl', 'cpu') / med('floor+scr', 'cpu'):.2f}x"
        )
    print("runs (wall/cpu):")
    for name in samples:
        print(show_runs(name, samples[name]))
    print()
    reuse_ratio = wall2 / wall1
    print(f"reuse, one ConnectionPool in this process ({count} nodes, forks {forks}):")
    print(f"  round 1 (connect + probe)  wall {wall1:6.2f} s  cpu {cpu1:6.2f} s  opened {opened1}")
    print(f"  round 2 (same pool)        wall {wall2:6.2f} s  cpu {cpu2:6.2f} s  opened {opened2}")
    print(
        f"  round2/round1 wall {reuse_ratio:5.2f}x  (target <= {REUSE_TARGET:.2f}x)  "
        f"{verdict(reuse_ratio, REUSE_TARGET)}"
    )
    grew = opened2 - opened1
    print(
        f"  connections opened in round 2: {grew}  "
        f"{'PASS (reused)' if grew == 0 else 'MISS (pool reconnected)'}"
    )


if __name__ == "__main__":
    main()
