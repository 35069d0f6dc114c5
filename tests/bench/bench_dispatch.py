"""Dispatch overhead: N trivial inputs over a loopback fleet, edgectl vs GNU parallel.

Run: python tests/bench/bench_dispatch.py [--inputs 200] [--nodes 6] [--repeats 3]

Both tools do the same work per input: send the file to a node, upper-case it there,
bring the result home. GNU parallel runs with `--sshlogin` over ssh with ControlMaster
multiplexing (its fastest setup), transferring with --transferfile/--return/--cleanup.
edgectl runs `job submit script ... --wait`. Medians of interleaved runs, and the ratio.
Target: edgectl <= 0.5x GNU parallel's time.
"""

from __future__ import annotations

import argparse
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


def ssh_config(fleet, directory: Path) -> Path:
    """An ssh_config naming each node, multiplexed, trusting exactly the fleet's keys."""
    known = fleet.write_known_hosts(directory / "known_hosts")
    lines = []
    for node in fleet.nodes:
        lines += [
            f"Host {node.name}",
            f"  HostName {node.host}",
            f"  Port {node.port}",
            f"  User {node.user}",
            f"  IdentityFile {node.key}",
            f"  UserKnownHostsFile {known}",
            "  StrictHostKeyChecking yes",
            "  ControlMaster auto",
            f"  ControlPath {directory}/cm-%h-%p",
            "  ControlPersist 60",
            "  BatchMode yes",
        ]
    path = directory / "ssh_config"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_parallel(fleet, config: Path, inputs: Path, work: Path, slots: int) -> float:
    """GNU parallel over the fleet; returns wall seconds."""
    out = work / "parallel-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for file in inputs.iterdir():
        shutil.copy(file, out / file.name)
    logins = ",".join(f"{slots}/{n.name}" for n in fleet.nodes)
    names = sorted(p.name for p in out.iterdir())
    started = time.perf_counter()
    subprocess.run(
        [
            "parallel",
            "--will-cite",
            "--ssh",
            f"ssh -F {config}",
            "-S",
            logins,
            "--workdir",
            "...",
            "--transferfile",
            "{}",
            "--return",
            "{.}.up",
            "--cleanup",
            "tr a-z A-Z < {} > {.}.up",
            ":::",
            *names,
        ],
        cwd=out,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    produced = len(list(out.glob("*.up")))
    if produced != len(names):
        raise SystemExit(f"GNU parallel produced {produced} of {len(names)} outputs")
    return elapsed


def run_edgectl(home: Path, inputs: Path) -> float:
    """edgectl job submit --wait over the fleet; returns wall seconds."""
    started = time.perf_counter()
    proc = subprocess.run(
        edgectl_argv(
            home,
            "job",
            "submit",
            "script",
            str(inputs),
            "--on",
            "n*",
            "--run",
            "tr a-z A-Z < {input} > out/{stem}.up",
            "--wait",
            "--json",
        ),
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"edgectl failed: {proc.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("parallel") is None:
        raise SystemExit("GNU parallel is not installed (apt-get install parallel)")
    with tempfile.TemporaryDirectory() as tmp, running_fleet(args.nodes) as fleet:
        work = Path(tmp)
        os.chmod(work, 0o755)
        inputs = work / "inputs"
        inputs.mkdir()
        for i in range(args.inputs):
            (inputs / f"in{i:04d}.txt").write_text(f"line {i}\n")
        config = ssh_config(fleet, work)
        home = work / "home"
        edge = EdgeFleet(home)
        edge.add_nodes(fleet.nodes)
        fleet.write_known_hosts(home / "known_hosts")
        edge.remove_nodes(["local"])
        cores = os.cpu_count() or 1
        # Warm the ControlMaster connections, as a user of multiplexing would have them.
        for node in fleet.nodes:
            subprocess.run(["ssh", "-F", str(config), node.name, "true"], check=True)
        masters = sum(
            subprocess.run(
                ["ssh", "-F", str(config), "-O", "check", node.name], capture_output=True
            ).returncode
            == 0
            for node in fleet.nodes
        )
        print(f"ssh ControlMaster running for {masters} of {len(fleet.nodes)} nodes")
        if masters != len(fleet.nodes):
            raise SystemExit("multiplexing is not in effect: the baseline would be unfair")
        edge_times, parallel_times = [], []
        for _ in range(args.repeats):
            parallel_times.append(run_parallel(fleet, config, inputs, work, cores))
            edge_times.append(run_edgectl(home, inputs))
        for node in fleet.nodes:
            subprocess.run(["ssh", "-F", str(config), "-O", "exit", node.name], capture_output=True)
    p, e = statistics.median(parallel_times), statistics.median(edge_times)
    print(
        f"{args.inputs} trivial inputs over {args.nodes} loopback nodes, {args.repeats} interleaved runs each"
    )
    print(
        f"GNU parallel --sshlogin (ControlMaster)  median {p:6.2f} s   runs {', '.join(f'{t:.2f}' for t in parallel_times)}"
    )
    print(
        f"edgectl job submit --wait                median {e:6.2f} s   runs {', '.join(f'{t:.2f}' for t in edge_times)}"
    )
    verdict = "PASS" if e / p <= 0.5 else "MISS"
    print(f"edgectl / GNU parallel = {e / p:.2f}  (target <= 0.50: {verdict})")


if __name__ == "__main__":
    main()
