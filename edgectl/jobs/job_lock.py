"""The one-executor-per-job lock: a lock file per job under EDGECTL_HOME."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from edgectl.errors import EdgectlError


class JobBusy(EdgectlError):
    """Another edgectl process is running this job."""


@contextlib.contextmanager
def job_lock(home: Path, job_id: str) -> Iterator[None]:
    """Hold the one-executor-per-job lock, or raise JobBusy at once."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(home / f".job-{job_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobBusy(f"job {job_id} is being run by another edgectl process") from None
        yield
    finally:
        os.close(fd)


def job_is_busy(home: Path, job_id: str) -> bool:
    """Whether some process holds the job's executor lock."""
    try:
        with job_lock(home, job_id):
            return False
    except JobBusy:
        return True
