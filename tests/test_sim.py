"""The simulator: seeded scenarios, an honest lower bound, and the policies it compares."""

from __future__ import annotations

import math

import pytest

from edgectl.scheduler import JobSpec, TaskSpec
from edgectl.sim import (
    POLICIES,
    Scenario,
    SimNode,
    lower_bound,
    make_scenario,
    simulate,
)

MB = 1_000_000


def scenario(
    nodes: list[SimNode],
    costs: list[float],
    jobs: tuple[JobSpec, ...] = (JobSpec("j"),),
    job_of: list[str] | None = None,
    **fields: float,
) -> Scenario:
    """A hand-made scenario: tasks t0.. with exact estimates, no data already on nodes."""
    job_of = job_of or [jobs[0].id] * len(costs)
    tasks = tuple(
        TaskSpec(f"t{i}", job_of[i], {f"in{i}": MB}, work=cost) for i, cost in enumerate(costs)
    )
    return Scenario(
        seed=0,
        nodes=tuple(nodes),
        jobs=jobs,
        tasks=tasks,
        costs={t.id: c for t, c in zip(tasks, costs, strict=True)},
        has_inputs={n.name: frozenset() for n in nodes},
        **fields,  # type: ignore[arg-type]
    )


def plain(name: str, cores: int, speed: float, **fields: object) -> SimNode:
    """A node with English and German, nothing happening to it unless asked."""
    return SimNode(name, cores, speed, frozenset({"eng", "deu"}), **fields)  # type: ignore[arg-type]


# ---- scenarios and the bound ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_scenarios_hold_the_mix_asked_for(seed: int) -> None:
    s = make_scenario(seed)
    assert 6 <= len(s.nodes) <= 12
    assert 200 <= len(s.tasks) <= 600
    assert {1.0, 2.0, 4.0} <= {n.speed for n in s.nodes}
    slowed = [n for n in s.nodes if n.slow_at is not None]
    dropped = [n for n in s.nodes if n.drop_at is not None]
    assert len(slowed) == len(dropped) == 1 and slowed != dropped
    assert any(n.background for n in s.nodes)
    assert sum(len(held) for held in s.has_inputs.values()) > 0.1 * len(s.tasks)
    assert min(s.costs.values()) > 0 and max(s.costs.values()) > 3 * min(s.costs.values())


def test_the_same_seed_gives_the_same_scenario_and_result() -> None:
    assert make_scenario(11) == make_scenario(11)
    assert make_scenario(11) != make_scenario(12)
    assert simulate(make_scenario(11), "edgectl") == simulate(make_scenario(11), "edgectl")


BOUNDS = [
    # (nodes, costs, expected): capacity is work / (sum of speed x cores)
    ("capacity", [plain("a", 2, 1.0), plain("b", 1, 2.0)], [4.0, 4.0, 8.0], 16 / 4),
    (
        "longest task on the fastest core",
        [plain("a", 8, 1.0), plain("b", 1, 2.0)],
        [20.0, 1.0],
        10.0,
    ),
    (
        "background load takes cores",
        [plain("a", 2, 1.0, background=((0.0, 1.0),)), plain("b", 1, 2.0)],
        [3.0, 3.0, 3.0],
        9 / 3,
    ),
    (
        "a node dropping gives no capacity after",
        [plain("a", 1, 1.0, drop_at=2.0), plain("b", 1, 1.0)],
        [3.0, 3.0],
        2 + 2 / 1,  # 4 units done by t=2, the 2 left on b alone
    ),
    (
        "a slowed node counts a fifth",
        [plain("a", 1, 5.0, slow_at=1.0)],
        [10.0],
        1 + 5 / 1,  # 5 units in the first second, then 1 unit/s
    ),
]


@pytest.mark.parametrize(
    ("nodes", "costs", "expected"), [b[1:] for b in BOUNDS], ids=[b[0] for b in BOUNDS]
)
def test_lower_bound(nodes: list[SimNode], costs: list[float], expected: float) -> None:
    assert lower_bound(scenario(nodes, costs)) == pytest.approx(expected)


def test_lower_bound_follows_chains_of_jobs_and_their_languages() -> None:
    nodes = [plain("fast", 1, 4.0), SimNode("eng", 4, 1.0, frozenset({"eng"}))]
    jobs = (JobSpec("a"), JobSpec("b", after=("a",), requires_langs=("deu",)))
    s = scenario(nodes, [8.0, 8.0], jobs, ["a", "b"])
    # a ends at 2 at best (8 units on the 4x core); b can only run on `fast`: 2 more.
    assert lower_bound(s) == pytest.approx(4.0)


# ---- runs ----------------------------------------------------------------------------------


def test_every_policy_finishes_and_none_beats_the_bound() -> None:
    s = make_scenario(4)
    bound = lower_bound(s)
    results = {policy: simulate(s, policy) for policy in POLICIES}
    for result in results.values():
        assert result.makespan >= bound
        assert result.tasks == len(s.tasks)
    assert results["edgectl"].duplicated_work <= 0.10
    for policy in ("edgectl-nodup", "round-robin", "static-split"):
        assert results[policy].duplicated_work == 0.0


@pytest.mark.parametrize("seed", [2, 9])
def test_edgectl_beats_the_naive_policies(seed: int) -> None:
    s = make_scenario(seed)
    ratio = {policy: simulate(s, policy).ratio for policy in POLICIES}
    assert ratio["edgectl"] < 0.8 * ratio["round-robin"]
    assert ratio["edgectl"] < 0.8 * ratio["static-split"]


def test_a_dropped_node_loses_its_tasks_and_they_are_placed_elsewhere() -> None:
    nodes = [plain("a", 1, 1.0, drop_at=5.0), plain("b", 1, 1.0)]
    s = scenario(nodes, [20.0, 20.0, 1.0, 1.0], probe_every_s=2.0, dispatch_s=0.0)
    result = simulate(s, "edgectl-nodup")
    assert result.makespan > lower_bound(s)
    assert result.makespan < 60  # finished on b


def test_copies_rescue_a_task_stuck_on_a_node_that_slowed() -> None:
    # `a` looks fastest, takes the big task, then slows 5x; there are enough small tasks
    # that a copy of the big one fits in the 10% budget.
    nodes = [plain("a", 4, 5.0, slow_at=1.0), plain("b", 2, 4.0), plain("c", 2, 4.0)]
    s = scenario(nodes, [30.0] + [2.0] * 150, probe_every_s=2.0, dispatch_s=0.0)
    with_copies, without = simulate(s, "edgectl"), simulate(s, "edgectl-nodup")
    assert with_copies.makespan < 0.9 * without.makespan
    assert 0 < with_copies.duplicated_work <= 0.10


def test_data_already_on_a_node_saves_its_transfer() -> None:
    nodes = [plain("a", 1, 1.0), plain("b", 1, 1.0)]
    s = scenario(nodes, [5.0, 5.0], s_per_byte=1e-5, dispatch_s=0.0)  # 10 s per input
    held = Scenario(
        **{**s.__dict__, "has_inputs": {"a": frozenset({"in0"}), "b": frozenset({"in1"})}}
    )
    assert simulate(held, "edgectl").makespan < simulate(s, "edgectl").makespan - 5
    assert math.isfinite(lower_bound(held))
