"""Secrets: a bootstrap password and a secret in a job's environment, counted everywhere.

The canaries are looked for in every log record at asyncssh's highest debug level, in
what the CLI printed (tracebacks included), in every file under EDGECTL_HOME (the TinyDB
files), in the node's files, and in the process list sampled while the work ran. Each
count must be 0.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.inventory.model import Node
from tests.cli import edgectl_argv, run_cli
from tests.fleet import Fleet, cannot_run_here
from tests.hostile.conftest import Figures
from tests.test_onboard import use_home_authorized_keys, user_authorized_keys

pytestmark = pytest.mark.fleet

__all__ = ["user_authorized_keys"]  # the fixture, used by name

PASSWORD_CANARY = "canary-pw-7f3a9c$(touch /tmp/x)"
WRONG_CANARY = "canary-wrong-51be"
JOB_CANARY = "canary-job-token-e41d"


class ProcessSampler:
    """Reads the whole process list every 20 ms while running."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(5000):
            if self.stop.is_set():
                return
            done = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True)
            self.lines.extend(done.stdout.splitlines())
            self.stop.wait(0.02)

    def __enter__(self) -> ProcessSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


class Captured(logging.Handler):
    """Every log record of every logger, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[Captured]:
    """The root logger at DEBUG and asyncssh at its highest debug level, captured."""
    import asyncssh

    handler = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    asyncssh.set_log_level(logging.DEBUG)
    asyncssh.set_debug_level(3)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        asyncssh.set_debug_level(1)
        asyncssh.set_log_level(logging.WARNING)


def count_in_tree(directory: Path, canary: bytes) -> int:
    found = 0
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                found += path.read_bytes().count(canary)
            except OSError:
                continue
    return found


def test_bootstrap_password_and_job_secret_appear_nowhere(
    fleet_factory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    user_authorized_keys: Path,
    all_logs: Captured,
    figures: Figures,
) -> None:
    if os.geteuid() != 0:
        cannot_run_here("setting the test user's password needs root")
    fleet: Fleet = fleet_factory(1, password=PASSWORD_CANARY)
    use_home_authorized_keys(fleet)
    home = tmp_path / "home"
    EdgeFleet(home).add_nodes([Node(**{**n.to_dict(), "key": None}) for n in fleet.nodes])
    printed: list[str] = []
    with ProcessSampler() as sampler:
        monkeypatch.setenv("EDGE_PASSWORD", WRONG_CANARY)
        wrong = run_cli(
            home, "inventory", "bootstrap", "n01", "--password-env", "EDGE_PASSWORD", "--accept-new"
        )
        monkeypatch.setenv("EDGE_PASSWORD", PASSWORD_CANARY)
        right = run_cli(
            home,
            "inventory",
            "bootstrap",
            "n01",
            "--password-env",
            "EDGE_PASSWORD",
            "--accept-new",
            "--json",
        )
        printed += [wrong.stdout, wrong.stderr, right.stdout, right.stderr]
        # The same from a separate process: whatever it prints, tracebacks included.
        env = {**os.environ, "EDGE_PASSWORD": WRONG_CANARY, "PYTHONDEVMODE": "1"}
        child = subprocess.run(
            edgectl_argv(
                home,
                "inventory",
                "bootstrap",
                "n01",
                "--password-env",
                "EDGE_PASSWORD",
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        printed += [child.stdout, child.stderr]
        # A job run by a controller whose environment holds a secret (as cron's would).
        inputs = tmp_path / "inputs"
        inputs.mkdir()
        (inputs / "a.txt").write_text("a\n")
        env = {**os.environ, "EDGECTL_HOME": str(home), "API_TOKEN": JOB_CANARY}
        job = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgectl",
                "job",
                "submit",
                "script",
                str(inputs),
                "--on",
                "n01",
                "--run",
                "env > out/env.txt; ps -eww -o args > out/ps.txt",
                "--wait",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        printed += [job.stdout, job.stderr]
    assert wrong.exit_status != 0 and right.exit_status == 0, right.stdout + right.stderr
    assert job.returncode == 0, job.stderr
    assert list((home / "results").glob("*/env.txt")), "the job's result did not arrive"
    counts = {}
    for canary in (PASSWORD_CANARY, WRONG_CANARY, JOB_CANARY):
        counts[canary] = {
            "logs": sum(text.count(canary) for text in all_logs.texts),
            "printed": sum(text.count(canary) for text in printed),
            "home files": count_in_tree(home, canary.encode()),
            "node files": count_in_tree(Path(fleet.nodes[0].workdir), canary.encode()),
            "process list": sum(line.count(canary) for line in sampler.lines),
        }
    for canary, places in counts.items():
        for place, count in places.items():
            figures.zero("canary secret occurrences", f"{canary[:16]} in {place}", count)
    assert len(all_logs.texts) > 20  # the highest verbosity really was on
    assert len(sampler.lines) > 100
    assert all(n == 0 for places in counts.values() for n in places.values()), counts
