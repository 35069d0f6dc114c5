"""The probe parser: data-driven cases, one JSON file each (output in, facts out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgectl.facts.parse import FACT_NAMES, ProbeOutputError, parse_probe_output

CASES = sorted((Path(__file__).parent / "data" / "facts").glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_probe_output_parses_to_expected_facts(path: Path) -> None:
    case = json.loads(path.read_text())
    facts = parse_probe_output(case["output"], case["rtt_ms"], case["probed_at"])
    assert facts == case["expected"]
    assert list(facts) == list(FACT_NAMES)


@pytest.mark.parametrize(
    "output",
    [
        "",
        "edgectl_probe=1\nhostname=x\n",  # cut off before the end marker
        "hostname=x\nedgectl_probe_end=1\n",  # not started by the probe
        "Welcome to the jungle\n",
    ],
)
def test_incomplete_output_is_refused(output: str) -> None:
    with pytest.raises(ProbeOutputError):
        parse_probe_output(output)


def test_gigantic_output_stays_bounded() -> None:
    output = (
        "edgectl_probe=1\n"
        + "tesseract=5\n"
        + "tesseract_lang=l\n" * 10
        + "".join(f"tesseract_lang=lang{i}\n" for i in range(100_000))
        + "edgectl_probe_end=1\n"
    )
    facts = parse_probe_output(output)
    assert len(facts["tesseract_langs"]) == 300
    assert all(len(str(v)) <= 200 for v in facts.values() if not isinstance(v, list))
