"""Crashes and concurrency: SIGKILL of the controller at seeded points then resume; cron
runs at once; a full disk under EDGECTL_HOME."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.errors import StoreError
from edgectl.jobs import remote
from edgectl.jobs.executor import ExecOptions
from edgectl.jobs.model import JobState
from edgectl.jobs.service import Jobs
from edgectl.store import Store
from tests.cli import edgectl_argv, run_cli
from tests.fleet import Fleet, cannot_run_here
from tests.hostile.conftest import Figures
from tests.hostile.test_hostile_node import fleet_home

pytestmark = pytest.mark.fleet

SEED = 20261127
CRASH_POINTS = 22
STORES = ("inventory", "facts", "jobs")


def make_inputs(directory: Path, count: int, tag: str) -> None:
    directory.mkdir(parents=True)
    for i in range(count):
        (directory / f"{tag}{i:02d}.txt").write_text(f"{tag} input {i}\n" * (i + 1))


def unreadable_files(home: Path) -> list[str]:
    """Store files that do not load, and result manifests that are not JSON."""
    store = Store(home)
    broken = [name for name in STORES if store.check(name)]
    for manifest in (home / "results").glob("*/manifest.json"):
        try:
            json.loads(manifest.read_text())
        except ValueError:
            broken.append(str(manifest))
    return broken


def unverified_done(home: Path) -> list[str]:
    """Tasks the ledger calls done whose outputs are not stored with their sha256."""
    bad = []
    for job in Jobs(EdgeFleet(home)).list_jobs():
        document = Jobs(EdgeFleet(home)).show(job["id"])
        directory = home / "results" / job["id"]
        for task in document["tasks"]:
            if task["state"] != "done":
                continue
            if len(task["outputs"]) != len(task["inputs"]):
                bad.append(task["id"])
            for output in task["outputs"]:
                path = directory / output["name"]
                ok = (
                    path.is_file()
                    and hashlib.sha256(path.read_bytes()).hexdigest() == output["sha256"]
                )
                if not ok:
                    bad.append(f"{task['id']}:{output['name']}")
    return bad


def doubled_results(home: Path, job_id: str, inputs: Path) -> int:
    """Results stored more than once (or stray files) once the job is done."""
    directory = home / "results" / job_id
    names = sorted(p.name for p in directory.iterdir())
    wanted = sorted(f"{p.stem}.up" for p in inputs.iterdir())
    manifest = json.loads((directory / "manifest.json").read_text())
    listed = [f["name"] for f in manifest["files"]]
    doubled = len(listed) - len(set(listed))
    stray = len(set(names) - {*wanted, "manifest.json"})
    missing = len(set(wanted) - set(listed))
    return doubled + stray + missing


RUN = "sleep 0.3; tr a-z A-Z < {input} > out/{stem}.up"


def test_sigkill_at_seeded_points_then_resume_loses_and_doubles_nothing(
    fleet: Fleet, figures: Figures, tmp_path: Path
) -> None:
    home = fleet_home(tmp_path / "home", fleet)
    rng = random.Random(SEED)
    jobs = Jobs(EdgeFleet(home))
    submitted: list[tuple[str, Path]] = []
    delays: list[float] = []
    problems: list[str] = []
    deadline = time.monotonic() + 120
    current: str | None = None
    while len(delays) < CRASH_POINTS and time.monotonic() < deadline:
        if current is None:
            inputs = tmp_path / f"inputs{len(submitted)}"
            make_inputs(inputs, 16, f"j{len(submitted)}-")
            current = jobs.submit("script", [str(inputs)], selector="n*", params={"run": RUN}).id
            submitted.append((current, inputs))
        delay = round(rng.uniform(0.5, 2.0), 3)
        proc = subprocess.Popen(
            edgectl_argv(home, "job", "resume", current, "--json"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=delay)
            current = None  # the job finished before this kill point: start the next one
            continue
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        delays.append(delay)
        broken, unverified = unreadable_files(home), unverified_done(home)
        figures.record("crash point", f"SIGKILL after {delay} s", not broken and not unverified)
        problems += [f"after {delay} s: unreadable {b}" for b in broken]
        problems += [f"after {delay} s: done without verified result {u}" for u in unverified]
    doubled = 0
    for job_id, inputs in submitted:
        result = run_cli(home, "job", "resume", job_id, "--json")
        assert result.exit_status == 0, result.stderr
        assert result.json["state"] == "done"
        doubled += doubled_results(home, job_id, inputs)
        leftovers = list((home / "results" / job_id).glob(".*"))
        problems += [f"temp file left: {p.name}" for p in leftovers]
    figures.zero(
        "unreadable files after a crash", "crash loop", sum("unreadable" in p for p in problems)
    )
    figures.zero(
        "done without verified results", "crash loop", sum("verified" in p for p in problems)
    )
    figures.zero("results stored twice", "crash loop", doubled)
    # A start exec orphaned by a kill finds its attempt given up by the resumed controller
    # (which placed the work elsewhere) and leaves: only the claim marks such an attempt.
    # One still unpacking when the resume ends removes its files when it reaches the claim:
    # give it up to 15 s.
    deadline = time.monotonic() + 15
    while True:
        attempts = [p for node in fleet.nodes for p in (Path(node.workdir) / "tasks").glob("t*")]
        markers = [p for p in attempts if given_up_marker(p)]
        if len(markers) == len(attempts) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    litter = sorted(str(p) for p in set(attempts) - set(markers))
    figures.zero("task directories left on nodes", "crash loop", len(litter))
    figures.record("given-up markers on nodes", "crash loop", True, len(markers))
    for node in fleet.nodes:  # the next cleanup after their age removes the markers
        subprocess.run(remote.sh(remote.CLEANUP, node.workdir, "-1"), check=True, timeout=30)
        assert not list((Path(node.workdir) / "tasks").glob("t*"))
    assert len(set(delays)) >= 20, f"only {len(delays)} crash points within the time budget"
    assert problems == []
    assert doubled == 0
    assert litter == []


def given_up_marker(directory: Path) -> bool:
    """An attempt given up before it started: its directory holds only the claim."""
    try:  # a start that lost the claim may be removing its files right now
        names = [p.name for p in directory.iterdir()]
        return names == [".claim"] and os.readlink(directory / ".claim").startswith("gone ")
    except FileNotFoundError:
        return False


def cron_scripts(home: Path, fleet: Fleet, inputs: Path) -> dict[str, list[list[str]]]:
    """Eight cron-style runs, each a few edgectl invocations in a row."""
    node = fleet.nodes[0]
    scripts: dict[str, list[list[str]]] = {}
    for writer in range(3):
        scripts[f"add{writer}"] = [
            edgectl_argv(home, "inventory", "add", f"cron-{writer}-{k}", "--host", node.host)
            for k in range(4)
        ]
    scripts["label"] = [
        edgectl_argv(home, "inventory", "label", "n01", f"cron{k}=yes") for k in range(4)
    ]
    scripts["group"] = [edgectl_argv(home, "inventory", "group", "n02", f"g{k}") for k in range(4)]
    scripts["probe"] = [edgectl_argv(home, "probe", "n*", "--json", "--timeout", "10")] * 2
    for submitter in range(2):
        scripts[f"submit{submitter}"] = [
            edgectl_argv(
                home,
                "job",
                "submit",
                "script",
                str(inputs),
                "--on",
                "n*",
                "--run",
                "cat {input} > out/{stem}.c",
                "--wait",
                "--json",
            )
            for _ in range(2)
        ]
    return scripts


def test_eight_cron_runs_at_once_lose_no_update(
    fleet: Fleet, figures: Figures, tmp_path: Path
) -> None:
    home = fleet_home(tmp_path / "home", fleet)
    inputs = tmp_path / "inputs"
    make_inputs(inputs, 3, "c")
    scripts = cron_scripts(home, fleet, inputs)
    chains = [
        subprocess.Popen(
            ["sh", "-c", " && ".join(" ".join(map(_q, argv)) + " >/dev/null" for argv in argvs)],
        )
        for argvs in scripts.values()
    ]
    for chain in chains:
        chain.wait(timeout=180)
    assert [c.returncode for c in chains] == [0] * len(chains)
    fleet_now = EdgeFleet(home)
    names = {n.name for n in fleet_now.nodes("all")}
    lost = sum(f"cron-{w}-{k}" not in names for w in range(3) for k in range(4))
    labels = fleet_now.node("n01").labels
    lost += sum(labels.get(f"cron{k}") != "yes" for k in range(4))
    groups = fleet_now.node("n02").groups
    lost += sum(f"g{k}" not in groups for k in range(4))
    jobs = Jobs(fleet_now).list_jobs()
    lost += max(0, 4 - sum(j["state"] == "done" for j in jobs))
    facts = {r["name"] for r in fleet_now.status("n*") if r.get("facts")}
    lost += len({n.name for n in fleet.nodes} - facts)
    figures.record("cron runs at once", f"{len(chains)} processes", lost == 0, len(chains))
    figures.zero("lost updates", "eight cron runs", lost)
    assert lost == 0


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


@pytest.fixture
def small_tmpfs() -> Iterator[Path]:
    """A 4 MiB tmpfs mounted on a directory made here (root only); unmounted after."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        cannot_run_here("mounting a tmpfs needs root")
    mountpoint = Path(tempfile.mkdtemp(prefix="edgectl-fulldisk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        mountpoint.rmdir()
        cannot_run_here(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False, timeout=30)
        mountpoint.rmdir()


def fill(directory: Path, leave: int) -> Path:
    """Fill the file system of directory until about `leave` bytes are free."""
    filler = directory / "filler"
    free = shutil.disk_usage(directory).free
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_full_disk_while_writing_the_store_and_pulling_results(
    fleet: Fleet, small_tmpfs: Path, figures: Figures, tmp_path: Path
) -> None:
    home = fleet_home(small_tmpfs / "home", fleet)
    before = Store(home).path("inventory").read_bytes()
    filler = fill(small_tmpfs, 1024)
    # 1. The store: a write that does not fit is a clear error; the old state is intact.
    added = run_cli(
        home,
        "inventory",
        "add",
        "big" + "x" * 50,
        "--host",
        "127.0.0.1",
        *[f"--label=k{i}={'v' * 200}" for i in range(20)],
    )
    store_ok = (
        added.exit_status != 0
        and "disk is full" in added.stderr
        and Store(home).path("inventory").read_bytes() == before
        and not list(home.glob(".*.tmp"))
    )
    figures.fault("full disk while writing the inventory", store_ok)
    assert store_ok, added.stderr
    # 2. Pulling results: room for the ledger, not for a 2 MiB output.
    filler.unlink()
    inputs = tmp_path / "inputs"
    make_inputs(inputs, 1, "d")
    jobs = Jobs(EdgeFleet(home))
    job = jobs.submit(
        "script",
        [str(inputs)],
        selector="n01",
        params={"run": "head -c 3000000 /dev/urandom > out/big"},
    )
    fill(small_tmpfs, 1536 * 1024)
    state = jobs.run(job.id, options=ExecOptions(op_timeout=10.0, lease=5.0, poll_max=0.3))
    [task] = jobs.show(job.id)["tasks"]
    directory = home / "results" / job.id
    stored = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    pull_ok = (
        state == JobState.FAILED
        and "disk is full" in (task["error"] or "")
        and stored in ([], ["manifest.json"])
        and Store(home).check("jobs") is None
    )
    figures.fault("full disk while pulling a result", pull_ok)
    assert pull_ok, (task["error"], stored)
    with pytest.raises(StoreError):
        Store(home).write("jobs", {"_default": {"1": {"pad": "x" * 4_000_000}}})
    assert Store(home).check("jobs") is None
