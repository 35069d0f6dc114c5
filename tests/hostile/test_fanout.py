"""Fan-out limits: many nodes behind one sshd with the stock `MaxStartups 10:30:100`.

sshd drops a growing share of connections that are still in their handshake once 10
are pending. edgectl's pool retries such drops with backoff (bounded), so every node
is reached. CI runs 120 nodes; tests/bench/bench_maxstartups.py runs 300.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.inventory.model import Node
from tests.fleet import Fleet
from tests.hostile.conftest import Figures

pytestmark = pytest.mark.fleet

STOCK_MAX_STARTUPS = "10:30:100"


def many_names_one_sshd(home: Path, fleet: Fleet, count: int) -> EdgeFleet:
    """`count` inventory nodes, all pointing at the fleet's one sshd."""
    target = fleet.nodes[0]
    nodes = [Node(**{**target.to_dict(), "name": f"m{i:03d}"}) for i in range(count)]
    edge = EdgeFleet(home)
    edge.add_nodes(nodes)
    fleet.write_known_hosts(home / "known_hosts")
    return edge


def probe_all(edge: EdgeFleet, forks: int) -> tuple[int, int, float]:
    started = time.monotonic()
    results = edge.probe("m*", timeout=20.0, forks=forks)
    reached = sum(r.reachable for r in results)
    return reached, len(results), time.monotonic() - started


def test_a_hundred_and_twenty_nodes_behind_stock_max_startups_are_all_reached(
    fleet_factory, figures: Figures, tmp_path: Path
) -> None:
    fleet = fleet_factory(1, max_startups=STOCK_MAX_STARTUPS)
    edge = many_names_one_sshd(tmp_path / "home", fleet, 120)
    reached, total, took = probe_all(edge, forks=100)
    figures.fault(f"{total} nodes behind MaxStartups {STOCK_MAX_STARTUPS}", reached == total)
    assert (reached, total) == (120, 120), f"reached {reached} of {total} in {took:.1f}s"
