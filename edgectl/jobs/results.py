"""Local result storage: outputs land in results/<job-id>/ once, verified, never elsewhere."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgectl.errors import StoreError
from edgectl.jobs.remote import OUTPUT_NAME, RESERVED_NAMES, OutputEntry


class ResultError(Exception):
    """An output that cannot be stored as it came (checksum, size, name clash)."""


def results_dir(home: Path, job_id: str) -> Path:
    """Where one job's results live."""
    return home / "results" / job_id


def store_output(directory: Path, entry: OutputEntry, data: bytes, task_id: str) -> Path:
    """Write one output under the job's directory, exactly once.

    The bytes go to a fresh temp file (O_EXCL|O_NOFOLLOW: nothing planted there is
    followed), are checked against the manifest, then hard-linked to the final name, which
    fails if that name exists: the same bytes stored again (a resume) are accepted, other
    bytes under a taken name are refused.
    """
    if not OUTPUT_NAME.fullmatch(entry.name) or entry.name in RESERVED_NAMES:
        raise ResultError(f"refused output name {entry.name!r}")
    if len(data) != entry.size:
        raise ResultError(f"{entry.name}: got {len(data)} bytes, the manifest says {entry.size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ResultError(f"{entry.name}: sha256 does not match the manifest")
    try:
        return _store_verified(directory, entry, data, digest, task_id)
    except OSError as exc:
        # A full disk (or a read-only one) fails this task with its reason; a raw OSError
        # would end the worker and leave the task downloading for ever.
        raise ResultError(f"{entry.name}: cannot store the result: {_why(exc)}") from None


def _why(exc: OSError) -> str:
    return "the disk is full" if exc.errno == errno.ENOSPC else str(exc.strerror or exc)


def _store_verified(
    directory: Path, entry: OutputEntry, data: bytes, digest: str, task_id: str
) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = temp_path(directory, task_id)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return _link(directory, entry, temp, digest)
    finally:
        _unlink(temp)


def temp_path(directory: Path, task_id: str) -> Path:
    """A fresh temp name in the job's results directory (removed if a crash leaves it)."""
    return directory / f".{task_id}.{secrets.token_hex(4)}.part"


def store_file(directory: Path, entry: OutputEntry, temp: Path) -> Path:
    """Store an output downloaded to `temp` (a temp name in `directory`), checked as
    `store_output` checks bytes; the temp file is gone afterwards."""
    try:
        if not OUTPUT_NAME.fullmatch(entry.name) or entry.name in RESERVED_NAMES:
            raise ResultError(f"refused output name {entry.name!r}")
        digest, size = hashlib.sha256(), 0
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
            os.fsync(handle.fileno())
        if size != entry.size:
            raise ResultError(f"{entry.name}: got {size} bytes, the manifest says {entry.size}")
        if digest.hexdigest() != entry.sha256:
            raise ResultError(f"{entry.name}: sha256 does not match the manifest")
        return _link(directory, entry, temp, entry.sha256)
    except OSError as exc:
        raise ResultError(f"{entry.name}: cannot store the result: {_why(exc)}") from None
    finally:
        _unlink(temp)


def _link(directory: Path, entry: OutputEntry, temp: Path, digest: str) -> Path:
    """Give the verified temp file its final name, once: a name taken by other bytes is refused."""
    final = directory / entry.name
    try:
        os.link(temp, final, follow_symlinks=False)
    except FileExistsError:
        if _same_content(final, digest):
            return final
        raise ResultError(
            f"{entry.name}: another task already stored a different file under this name"
        ) from None
    return final


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def _same_content(path: Path, digest: str) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == digest


def write_manifest(directory: Path, job: dict[str, Any], outputs: Iterable[dict[str, Any]]) -> Path:
    """manifest.json: every stored file with size and sha256, written atomically."""
    document = {"job": job, "files": sorted(outputs, key=lambda o: o["name"])}
    temp = directory / f".manifest.{secrets.token_hex(4)}.tmp"
    final = directory / "manifest.json"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        # Called once the run's downloads are over (one run per job at a time): any temp
        # file still here was left by a controller killed mid-write.
        for stale in [*directory.glob(".*.part"), *directory.glob(".manifest.*.tmp")]:
            stale.unlink(missing_ok=True)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise StoreError(
            f"cannot write {final}: {_why(exc)}; the previous manifest is unchanged"
        ) from None
    return final
