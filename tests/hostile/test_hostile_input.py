"""Hostile input from the user's side: names, hosts, labels, playbook values, file names,
workdirs and globs carrying `;`, `$()`, backticks, quotes, spaces and a leading `-`.

Each value embeds a canary command (`mkdir` of a marker directory). None may reach a
shell unquoted: after everything ran, on the controller and on the node, no marker exists.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.jobs.executor import ExecOptions
from edgectl.jobs.service import Jobs
from tests.cli import run_cli
from tests.fleet import TEST_HOME, Fleet
from tests.hostile.conftest import Figures
from tests.hostile.test_hostile_node import fleet_home
from tests.test_provision_fleet import DATA, provision

pytestmark = pytest.mark.fleet

MARK = f"edgectlpwned{os.getpid()}"


def hostile_values(absolute: str) -> list[str]:
    """Values that run `mkdir` of a marker if any shell ever evaluates them."""
    relative = MARK
    return [
        f"x;mkdir {absolute}",
        f"$(mkdir {absolute})",
        f"`mkdir {absolute}`",
        f"'\";mkdir {absolute};\"'",
        f"a b && mkdir {absolute}",
        f"-oProxyCommand=mkdir {absolute}",
        f"--x;mkdir {relative}",
        f"$(mkdir {relative})",
    ]


def markers(roots: list[Path]) -> list[Path]:
    """Every marker directory under the roots (bounded walk)."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for directory, subdirs, _ in os.walk(root):
            found += [Path(directory) / d for d in subdirs if d.startswith(MARK)]
            if directory.count(os.sep) - str(root).count(os.sep) > 6:
                subdirs.clear()
    return found


def test_hostile_values_never_run_anywhere(fleet: Fleet, figures: Figures, tmp_path: Path) -> None:
    home = fleet_home(tmp_path / "home", fleet)
    absolute = f"/tmp/{MARK}"
    values = hostile_values(absolute)
    outcomes: dict[str, bool] = {}

    # Node names and hostnames: refused with a usage error, or stored inert and failing cleanly.
    for i, value in enumerate(values):
        named = run_cli(home, "inventory", "add", "--host", "127.0.0.1", "--", value)
        outcomes[f"node name {value!r}"] = named.exit_status != 0 and "invalid" in named.stderr
        hosted = run_cli(home, "inventory", "add", f"h{i}", "--host", value)
        if hosted.exit_status == 0:
            probed = run_cli(home, "probe", f"h{i}", "--json", "--timeout", "3")
            outcomes[f"host {value!r}"] = probed.exit_status != 0
        else:
            outcomes[f"host {value!r}"] = "invalid" in hosted.stderr
        user = run_cli(home, "inventory", "set", "n04", f"user={value}")
        if user.exit_status == 0:
            probed = run_cli(home, "probe", "n04", "--json", "--timeout", "3")
            outcomes[f"user {value!r}"] = probed.exit_status != 0
            run_cli(home, "inventory", "set", "n04", f"user={fleet.nodes[3].user}")
        else:
            outcomes[f"user {value!r}"] = True

    # Labels and selectors: stored as text, matched as text.
    labelled = run_cli(
        home, "inventory", "label", "n01", *[f"k{i}={v}" for i, v in enumerate(values)]
    )
    shown = run_cli(home, "inventory", "list", f"k0={values[0]}", "--json")
    outcomes["label values"] = labelled.exit_status == 0 and [n["name"] for n in shown.json] == [
        "n01"
    ]
    for value in values:
        selected = run_cli(home, "inventory", "list", value, "--json")
        outcomes[f"selector {value!r}"] = selected.exit_status != 0 or selected.json == []

    # Playbook values: the `evil` label through shell, argv, template and guard steps.
    work = Path(fleet.nodes[1].workdir) / f"{MARK}-out"
    for value in values[:4]:
        EdgeFleet(home).label("n02", [f"evil={value}", f"out={work}"])
        result = provision(home, str(DATA / "canary.toml"), "n02", "--json")
        template = (work / "template.txt").read_text() if (work / "template.txt").exists() else ""
        outcomes[f"playbook value {value!r}"] = (
            result.exit_status == 0 and template == f"value: {value}\n"
        )
    subprocess.run(["rm", "-rf", str(work)], check=True, timeout=30)

    # File names of job inputs, a workdir and a --remote-path glob, on a real job.
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i, value in enumerate(values):
        (inputs / f"{value.replace(absolute, MARK)}.{i}.txt").write_text(f"input {i}\n")
    node_dir = Path(fleet.nodes[2].workdir)
    odd_workdir = node_dir / f"w d;$(mkdir {MARK}w)`mkdir {MARK}b`"
    run_cli(home, "inventory", "set", "n03", f"workdir={odd_workdir}")
    (node_dir / f"-r ;$(mkdir {MARK}g).dat").write_text("remote\n")
    jobs = Jobs(EdgeFleet(home))
    job = jobs.submit(
        "script",
        [str(inputs)],
        selector="n03",
        params={"run": "cat {input} > out/{stem}.out"},
        remote_paths=[f"{node_dir}/-r ;$(mkdir {MARK}g).dat", f"{node_dir}/*;$(mkdir {MARK}h)*"],
    )
    state = jobs.run(job.id, options=ExecOptions(op_timeout=10.0, lease=5.0, poll_max=0.3))
    stored = sorted(p.name for p in (home / "results" / job.id).iterdir())
    inputs_ran = sum(len(t["inputs"]) for t in jobs.show(job.id)["tasks"])
    outcomes["input file names, workdir and remote glob"] = (
        state.value == "done" and inputs_ran >= 9
    )
    assert state.value == "done" and inputs_ran >= 9, (state, stored, jobs.show(job.id)["tasks"])
    run_cli(home, "inventory", "set", "n03", f"workdir={fleet.nodes[2].workdir}")
    # The shared fleet's workdir is left as other tests expect it.
    subprocess.run(["rm", "-rf", "--", str(odd_workdir)], check=True, timeout=30)
    (node_dir / f"-r ;$(mkdir {MARK}g).dat").unlink()

    time.sleep(0.2)
    found = markers([Path("/tmp"), TEST_HOME, Path.cwd(), tmp_path, Path(fleet.directory)])
    for name, ok in outcomes.items():
        figures.attack(f"hostile input: {name}", ok)
    figures.zero("canary commands run", "hostile user input", len(found))
    assert found == []
    assert [name for name, ok in outcomes.items() if not ok] == []
