"""The selector grammar, table-driven: a pure function, no store, no server."""

from __future__ import annotations

import pytest

from edgectl.errors import UsageError
from edgectl.inventory.model import Node
from edgectl.inventory.selectors import parse_selector, select


def _node(name: str, groups: list[str], **labels: str) -> Node:
    return Node(name=name, host="192.0.2.1", groups=groups, labels=labels)


NODES = [
    _node("cam-01", ["cameras", "shanghai"], arch="arm64", site="shanghai"),
    _node("cam-02", ["cameras", "shanghai"], arch="arm64", site="shanghai"),
    _node("cam-07", ["cameras", "shanghai"], arch="amd64", site="shanghai"),
    _node("cam-11", ["cameras", "shenzhen"], arch="arm64", site="shenzhen"),
    _node("gw-01", ["gateways"], arch="amd64"),
    _node("gpu-01", ["gpu"], arch="amd64", gpu="nvidia"),
]

FACTS = {
    "cam-01": {"load1": 0.2, "tesseract": "5.3.0", "tesseract_langs": ["eng", "osd"], "cores": 4},
    "cam-02": {"load1": 1.5, "tesseract": None, "tesseract_langs": [], "cores": 4},
    "gw-01": {
        "load1": 0.4,
        "tesseract": "5.3.0",
        "tesseract_langs": ["eng", "chi_sim"],
        "cores": 2,
    },
}

CASES = [
    ("all", ["cam-01", "cam-02", "cam-07", "cam-11", "gw-01", "gpu-01"]),
    ("*", ["cam-01", "cam-02", "cam-07", "cam-11", "gw-01", "gpu-01"]),
    ("cam-01", ["cam-01"]),
    ("cam-0*", ["cam-01", "cam-02", "cam-07"]),
    ("cam-?1", ["cam-01", "cam-11"]),
    ("cam-[01]2", ["cam-02"]),
    ("@gateways", ["gw-01"]),
    ("@g*", ["gw-01", "gpu-01"]),
    ("gpu=nvidia", ["gpu-01"]),
    ("arch=arm*", ["cam-01", "cam-02", "cam-11"]),
    ("arch!=arm64", ["cam-07", "gw-01", "gpu-01"]),
    ("gw-01,gpu-01", ["gw-01", "gpu-01"]),
    ("@shanghai,&arch=arm64", ["cam-01", "cam-02"]),
    ("@shanghai,&arch=arm64,!cam-02", ["cam-01"]),
    # the example of the design document, in any order of terms
    ("!cam-07,@shanghai,&arch=arm64", ["cam-01", "cam-02"]),
    ("@cameras,!@shanghai", ["cam-11"]),
    ("!@cameras", ["gw-01", "gpu-01"]),
    ("&arch=amd64", ["cam-07", "gw-01", "gpu-01"]),
    ("@cameras,&@shenzhen,&arch=arm64", ["cam-11"]),
    (" cam-01 , gw-01 ", ["cam-01", "gw-01"]),
    ("nomatch", []),
    ("site=beijing", []),
    ("group=gpu", ["gpu-01"]),
    ("host=192.0.2.*,&name=gw-*", ["gw-01"]),
    # facts
    ("load<0.5", ["cam-01", "gw-01"]),
    ("load>=1.5", ["cam-02"]),
    ("has=tesseract", ["cam-01", "gw-01"]),
    ("lang=chi_sim", ["gw-01"]),
    ("lang=eng,&load<0.3", ["cam-01"]),
    ("cores>2", ["cam-01", "cam-02"]),
    ("cores<=2,!has=tesseract", []),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_selector_picks(text: str, expected: list[str]) -> None:
    assert [n.name for n in select(text, NODES, FACTS)] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty selector"),
        ("   ", "empty selector"),
        ("cam-01,,gw-01", "empty term"),
        ("cam-01,", "empty term"),
        ("!", "empty term"),
        ("&", "empty term"),
        ("@", "bad group"),
        ("@bad;group", "bad group"),
        ("load<high", "needs a number"),
        ("=value", "bad key"),
        ("9key=1", "bad key"),
        ("$(reboot)", "bad name"),
        ("cam;rm", "bad name"),
    ],
)
def test_bad_selector_is_refused_with_reason(text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_selector(text)
    assert message in str(caught.value)
    assert repr(text) in str(caught.value)


def test_several_selector_arguments_are_united() -> None:
    assert [n.name for n in select(["gw-01", "@gpu"], NODES)] == ["gw-01", "gpu-01"]


def test_missing_facts_match_no_fact_term() -> None:
    assert select("load<100", NODES, {}) == []
    assert [n.name for n in select("!has=tesseract", NODES, {})] == [n.name for n in NODES]
