"""Turn the probe's output into facts: a pure function, safe against hostile output.

A node's output is untrusted: unknown keys are ignored, values are length-capped and
stripped of control characters, numbers must parse and be in range, and nothing is
ever evaluated.
"""

from __future__ import annotations

import math
import re
from typing import Any

FACT_NAMES = (
    "hostname",
    "os",
    "kernel",
    "arch",
    "cores",
    "load1",
    "load5",
    "load15",
    "load_pct",
    "mem_total",
    "mem_available",
    "disk_total",
    "disk_free",
    "uptime_s",
    "python3",
    "tesseract",
    "tesseract_langs",
    "temp_c",
    "rtt_ms",
    "probed_at",
)

MAX_VALUE = 200
MAX_LANGS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LANG = re.compile(r"[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64})?")  # e.g. eng, script/Latin
_VERSION = re.compile(r"(\d+(?:\.\d+){0,3}(?:[-.a-z0-9]*)?)")


class ProbeOutputError(ValueError):
    """The output is not a complete probe report (cut off, or not from the probe at all)."""


def empty_facts() -> dict[str, Any]:
    """Every fact name with no value."""
    facts: dict[str, Any] = dict.fromkeys(FACT_NAMES)
    facts["tesseract_langs"] = []
    return facts


def _clean(value: str) -> str:
    if not value.isprintable():  # printable text has no control characters: skip the regex
        value = _CONTROL.sub("", value)
    return value.strip()[:MAX_VALUE]


def _number(text: str, low: float, high: float) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or not low <= value <= high:
        return None
    return value


def _int(text: str, low: float, high: float) -> int | None:
    value = _number(text, low, high)
    return None if value is None else int(value)


def _version(text: str) -> str | None:
    found = _VERSION.search(text)
    return found.group(1)[:40] if found else None


def parse_probe_output(
    output: str, rtt_ms: float | None = None, probed_at: float | None = None
) -> dict[str, Any]:
    """Facts from the probe script's output; raises ProbeOutputError if it is cut off."""
    facts = empty_facts()
    raw: dict[str, str] = {}
    langs: list[str] = []
    temps: list[float] = []
    started = ended = False
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = _clean(value)
        if key == "edgectl_probe":
            started = True
        elif key == "edgectl_probe_end":
            ended = True
        elif key == "tesseract_lang":
            if _LANG.fullmatch(value) and value not in langs and len(langs) < MAX_LANGS:
                langs.append(value)
        elif key == "temp_milli_c":
            temp = _number(value, -60_000, 200_000)
            if temp is not None:
                temps.append(temp / 1000)
        elif key not in raw:
            raw[key] = value
    if not (started and ended):
        raise ProbeOutputError("probe output is incomplete")

    for name in ("hostname", "kernel", "arch"):
        facts[name] = raw.get(name) or None
    facts["os"] = raw.get("os") or raw.get("system") or None
    facts["cores"] = _int(raw.get("cores", ""), 1, 100_000)
    loads = raw.get("loadavg", "").split()
    if len(loads) >= 3:
        values = [_number(v, 0, 1e6) for v in loads[:3]]
        facts["load1"], facts["load5"], facts["load15"] = values
    if facts["load1"] is not None and facts["cores"]:
        facts["load_pct"] = round(100 * facts["load1"] / facts["cores"], 1)
    total_kb = _int(raw.get("mem_total_kb", ""), 1, 2**50)
    avail_kb = _int(raw.get("mem_available_kb", ""), 0, 2**50)
    facts["mem_total"] = total_kb * 1024 if total_kb else None
    facts["mem_available"] = avail_kb * 1024 if avail_kb is not None else None
    disk = raw.get("disk_kb", "").split()
    if len(disk) == 2:
        size, free = (_int(v, 0, 2**50) for v in disk)
        facts["disk_total"] = size * 1024 if size is not None else None
        facts["disk_free"] = free * 1024 if free is not None else None
    facts["uptime_s"] = _number(raw.get("uptime_s", ""), 0, 1e10)
    if "python3" in raw:
        facts["python3"] = _version(raw["python3"])
    if "tesseract" in raw:
        facts["tesseract"] = _version(raw["tesseract"])
        facts["tesseract_langs"] = sorted(langs)
    if temps:
        facts["temp_c"] = round(max(temps), 1)
    facts["rtt_ms"] = None if rtt_ms is None else round(rtt_ms, 2)
    facts["probed_at"] = probed_at
    return facts
