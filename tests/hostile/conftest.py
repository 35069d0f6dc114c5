"""Fixtures of the hostile suite: the figures it reports, and a canary tree to catch escapes.

Each test records what it tried (an attack refused, a fault survived, a crash point, a
count that must be 0) through the `figures` fixture. With EDGECTL_HOSTILE_FIGURES set (as
`tests/hostile/report.py` does), the records are appended there as JSON lines; the report
sums them into its table. Without it, tests assert the same things and record nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

FIGURES_ENV = "EDGECTL_HOSTILE_FIGURES"


class Figures:
    """Appends one JSON line per observation to the figures file (when one is set)."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.path = os.environ.get(FIGURES_ENV)

    def record(self, figure: str, name: str, ok: bool = True, count: int = 1) -> None:
        """One observation: `figure` (what it counts), `name` (which one), ok or not."""
        if not self.path:
            return
        line = json.dumps(
            {"test": self.test, "figure": figure, "name": name, "ok": ok, "count": count}
        )
        with open(self.path, "a", encoding="utf-8") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            handle.write(line + "\n")

    def attack(self, name: str, refused: bool) -> None:
        """A hostile node's or user's attack, and whether it was refused or capped."""
        self.record("attack", name, refused)

    def fault(self, name: str, survived: bool) -> None:
        """An injected fault, and whether edgectl came through it cleanly."""
        self.record("fault", name, survived)

    def zero(self, figure: str, name: str, count: int) -> None:
        """A count that must be 0 (bytes outside the results root, canary hits, lost updates)."""
        self.record(figure, name, count == 0, count)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """The figures recorder of this test."""
    return Figures(request.node.nodeid)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class CanaryTree:
    """A directory tree around EDGECTL_HOME whose every file is fingerprinted.

    `root/home` is the EDGECTL_HOME; `root/canary/...`, `root/x`, `root/b` and
    files inside home are canaries a path-escaping result would overwrite or add to.
    `written_outside()` counts the bytes of every file added or changed anywhere under
    root except inside results/<job-id>/ and edgectl's own store files.
    """

    STORE_SUFFIXES = (".json", ".json.bak", ".lock", ".tmp")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        for relative in ("canary/etc/passwd", "canary/keep.txt", "x", "b", "home/canary.txt"):
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"canary {relative}\n")
        # Absolute targets an attack names: fingerprinted too (never written by edgectl).
        self.outside = [Path("/etc/passwd"), Path("/etc/hostname")]
        self.before = self._fingerprint()

    def _allowed(self, path: Path) -> bool:
        relative = path.relative_to(self.root)
        parts = relative.parts
        if parts[:2] == ("home", "results") and len(parts) >= 4:
            return True  # inside results/<job-id>/
        if parts[:2] == ("home", "logs"):
            return True
        return (
            len(parts) == 2
            and parts[0] == "home"
            and (parts[1] == "known_hosts" or parts[1].endswith(self.STORE_SUFFIXES))
        )

    def _fingerprint(self) -> dict[Path, tuple[int, str]]:
        found: dict[Path, tuple[int, str]] = {}
        for directory, _, files in os.walk(self.root):
            for name in files:
                path = Path(directory) / name
                if path.is_symlink() or not path.is_file() or self._allowed(path):
                    continue
                found[path] = (path.stat().st_size, _digest(path))
        for path in self.outside:
            if path.is_file():
                found[path] = (path.stat().st_size, _digest(path))
        return found

    def written_outside(self) -> int:
        """Bytes in files added or changed outside the results root since the start."""
        after = self._fingerprint()
        written = 0
        for path, (size, digest) in after.items():
            if self.before.get(path) != (size, digest):
                written += max(size, 1)
        for path in self.before.keys() - after.keys():
            written += max(self.before[path][0], 1)  # a canary removed or replaced
        return written


@pytest.fixture
def canary_tree(tmp_path: Path) -> Iterator[CanaryTree]:
    """A fingerprinted tree with EDGECTL_HOME inside it."""
    yield CanaryTree(tmp_path / "root")
