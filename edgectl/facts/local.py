"""Facts of the control machine itself (the `local` node), read with psutil: no shell."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from edgectl.facts.parse import empty_facts


def _existing_dir(path: str) -> Path:
    candidate = Path(path).expanduser()
    while not candidate.is_dir() and candidate != candidate.parent:
        candidate = candidate.parent
    return candidate


def _os_name() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"') or None
    except OSError:
        pass
    return platform.system() or None


def _tesseract() -> tuple[str | None, list[str]]:
    binary = shutil.which("tesseract")
    if not binary:
        return None, []
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        langs = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, []
    found = re.search(
        r"(\d+(?:\.\d+){0,3}(?:[-.a-z0-9]*)?)", (version.stdout + version.stderr).split("\n")[0]
    )
    names = sorted({line.strip() for line in langs.stdout.splitlines()[1:] if line.strip()})
    return (found.group(1) if found else None), names


def _temperature() -> float | None:
    import psutil

    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        readings = reader()
    except (OSError, RuntimeError):
        return None
    values = [entry.current for entries in readings.values() for entry in entries if entry.current]
    return round(max(values), 1) if values else None


def local_facts(workdir: str, now: float | None = None) -> dict[str, Any]:
    """The same facts the probe script gives, for this machine."""
    import psutil

    started = time.perf_counter()
    facts = empty_facts()
    uname = platform.uname()
    facts["hostname"] = uname.node or None
    facts["os"] = _os_name()
    facts["kernel"] = uname.release or None
    facts["arch"] = uname.machine or None
    facts["cores"] = os.cpu_count()
    facts["load1"], facts["load5"], facts["load15"] = (round(v, 2) for v in psutil.getloadavg())
    if facts["cores"]:
        facts["load_pct"] = round(100 * facts["load1"] / facts["cores"], 1)
    memory = psutil.virtual_memory()
    facts["mem_total"], facts["mem_available"] = memory.total, memory.available
    disk = psutil.disk_usage(str(_existing_dir(workdir)))
    facts["disk_total"], facts["disk_free"] = disk.total, disk.free
    facts["uptime_s"] = round(time.time() - psutil.boot_time(), 2)
    python = shutil.which("python3")
    if python:
        facts["python3"] = _python_version(python)
    facts["tesseract"], langs = _tesseract()
    if facts["tesseract"]:
        facts["tesseract_langs"] = langs
    facts["temp_c"] = _temperature()
    facts["rtt_ms"] = round((time.perf_counter() - started) * 1000, 2)
    facts["probed_at"] = now if now is not None else time.time()
    return facts


def _python_version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
    return found.group(1) if found else None
