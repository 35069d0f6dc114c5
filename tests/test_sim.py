"""The simulator: seeded scenarios, an honest lower bound, and the policies it compares."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pytest

from edgectl import sim
from edgectl.scheduler import Assignment, JobSpec, NodeState, TakeBack, TaskSpec
from edgectl.sim import (
    POLICIES,
    Policy,
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
    for policy in ("edgectl-nodup", "round-robin", "static-split", "clairvoyant"):
        assert results[policy].duplicated_work == 0.0


@pytest.mark.parametrize("seed", [2, 9])
def test_edgectl_beats_the_naive_policies(seed: int) -> None:
    s = make_scenario(seed)
    ratio = {policy: simulate(s, policy).ratio for policy in POLICIES}
    assert ratio["edgectl"] < 0.8 * ratio["round-robin"]
    assert ratio["edgectl"] < 0.8 * ratio["static-split"]


def test_the_clairvoyant_reference_keeps_off_a_node_that_will_slow() -> None:
    # a is twice as fast as b until it slows 5x at t=1: 40 work ends at 46 there, 20 on b.
    nodes = [plain("a", 1, 4.0, slow_at=1.0), plain("b", 1, 2.0)]
    s = scenario(nodes, [40.0], dispatch_s=0.0, s_per_byte=0.0)
    assert simulate(s, "clairvoyant").makespan == pytest.approx(20.0)


def test_the_clairvoyant_reference_places_nothing_that_a_dropout_would_cut() -> None:
    # On a, 40 work would end at 10, after it drops out at 5: it goes to b (40 s); the
    # small task ends on a before the drop. Nothing is lost.
    nodes = [plain("a", 1, 4.0, drop_at=5.0), plain("b", 1, 1.0)]
    s = scenario(nodes, [40.0, 8.0], dispatch_s=0.0, s_per_byte=0.0)
    result = simulate(s, "clairvoyant")
    assert result.makespan == pytest.approx(40.0)
    assert result.losses["dropped"] == 0.0


def test_the_clairvoyant_reference_releases_jobs_in_order_on_the_nodes_they_may_use() -> None:
    # b comes after a and needs German, which only the slow node has: a's task computes
    # 2 s on the fast node, then b's 2 s on the slow one, each after a push of 1 MB.
    nodes = [SimNode("fast", 1, 4.0, frozenset({"eng"})), plain("slow", 1, 1.0)]
    jobs = (JobSpec("a"), JobSpec("b", after=("a",), requires_langs=("deu",)))
    s = scenario(nodes, [8.0, 2.0], jobs, ["a", "b"], dispatch_s=0.0)
    assert simulate(s, "clairvoyant").makespan == pytest.approx(4.0 + 2 * MB * s.s_per_byte)


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


class Dealt(Policy):
    """A scripted policy: the given assignments at the start; nothing learned, no copies
    (the protocol's defaults do nothing and return nothing)."""

    def __init__(self, *assignments: Assignment) -> None:
        self.assignments = list(assignments)
        self.ends: dict[str, float] = {}

    def assign(self, now: float) -> list[Assignment]:
        """Everything at once, the first time."""
        out, self.assignments = self.assignments, []
        return out

    def task_finished(
        self, task_id: str, node: str, seconds: float, now: float, work: float | None = None
    ) -> list[str]:
        """Note when it ended."""
        self.ends[task_id] = now
        return []


def test_the_gate_lets_the_higher_priority_run_in_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One core: t0 computes; t1 (low) and t2 (high) wait; t2 goes next though it came later.
    jobs = (JobSpec("low"), JobSpec("high", priority=5))
    s = scenario(
        [plain("a", 1, 1.0)],
        [4.0, 4.0, 4.0],
        jobs,
        ["low", "low", "high"],
        dispatch_s=0.0,
        s_per_byte=0.0,
    )
    policy = Dealt(Assignment("a", ("t0",)), Assignment("a", ("t1",)), Assignment("a", ("t2",)))
    monkeypatch.setattr(sim, "make_policy", lambda name, scenario, **settings: policy)
    sim.simulate(s, "scripted")
    assert policy.ends == pytest.approx({"t0": 4.0, "t2": 8.0, "t1": 12.0})


def test_a_favoured_run_waits_at_the_gate_behind_a_higher_priority_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One core held by the high-priority t0: the favoured low-priority t1 waits for it.
    jobs = (JobSpec("low"), JobSpec("high", priority=5))
    s = scenario(
        [plain("a", 1, 1.0)], [4.0, 4.0], jobs, ["high", "low"], dispatch_s=0.0, s_per_byte=0.0
    )
    policy = Dealt(Assignment("a", ("t0",)), Assignment("a", ("t1",), favoured=True))
    monkeypatch.setattr(sim, "make_policy", lambda name, scenario, **settings: policy)
    sim.simulate(s, "scripted")
    assert policy.ends == pytest.approx({"t0": 4.0, "t1": 8.0})


@pytest.mark.parametrize(
    ("favoured", "ends"),
    [
        # A whole core for t0; t1 and t2 share the other.
        (True, {"t0": 10.0, "t1": 10.0, "t2": 10.0}),
        # Not favoured, t2 waits at the node's gate until t1's core frees.
        (False, {"t0": 10.0, "t1": 5.0, "t2": 10.0}),
    ],
)
def test_a_favoured_run_has_a_whole_core_and_the_others_share_the_rest(
    monkeypatch: pytest.MonkeyPatch, favoured: bool, ends: dict[str, float]
) -> None:
    s = scenario([plain("a", 2, 1.0)], [10.0, 5.0, 5.0], dispatch_s=0.0, s_per_byte=0.0)
    policy = Dealt(
        Assignment("a", ("t0",), favoured=favoured),
        Assignment("a", ("t1",)),
        Assignment("a", ("t2",)),
    )
    monkeypatch.setattr(sim, "make_policy", lambda name, scenario, **settings: policy)
    sim.simulate(s, "scripted")
    assert policy.ends == pytest.approx(ends)


# ---- where the capacity went ---------------------------------------------------------------


class OneByOne(Dealt):
    """A scripted policy: the given assignments one at a time, each once nothing runs."""

    def __init__(self, *assignments: Assignment) -> None:
        super().__init__(*assignments)
        self.running = 0

    def assign(self, now: float) -> list[Assignment]:
        """The next assignment, when the last one has ended."""
        if self.running or not self.assignments:
            return []
        self.running = 1
        return [self.assignments.pop(0)]

    def task_finished(
        self, task_id: str, node: str, seconds: float, now: float, work: float | None = None
    ) -> list[str]:
        """Note when it ended; the slot is free."""
        self.running = 0
        return super().task_finished(task_id, node, seconds, now, work)


class ReplacedOnB(Dealt):
    """A scripted policy: the given assignments at the start; a task lost with a node is
    placed on node `b`."""

    def node_lost(self, node: str, now: float) -> list[str]:
        """Place t0 again, on b."""
        self.assignments.append(Assignment("b", ("t0",)))
        return ["t0"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # Both runs push for 1 s on both cores (2 units idle), t1 ends at 5 and t0 at 11:
        # one core has nothing to do for 6 s. Capacity 2 cores x 11 s.
        ("pushing", {"pushing": 2 / 22, "tail": 6 / 22}),
        # t1 waits in the queue while t0 runs (10 s on the idle core), then runs alone
        # (4 s with nothing queued). Capacity 2 cores x 14 s.
        ("queued", {"queued": 10 / 28, "tail": 4 / 28}),
        # a computes 4 units of t0 and drops out; the probe at 10 s finds it gone and t0
        # runs again on b, which was idle from 2 s (t1 done) to 10 s. Capacity 4 + 20.
        ("dropped", {"dropped": 4 / 24, "tail": 8 / 24}),
    ],
)
def test_the_capacity_is_the_work_plus_each_loss_by_cause(
    monkeypatch: pytest.MonkeyPatch, case: str, expected: dict[str, float]
) -> None:
    if case == "dropped":
        nodes = [plain("a", 1, 1.0, drop_at=4.0), plain("b", 1, 1.0)]
        s = scenario(nodes, [10.0, 2.0], dispatch_s=0.0, s_per_byte=0.0)
        policy: Dealt = ReplacedOnB(Assignment("a", ("t0",)), Assignment("b", ("t1",)))
    else:
        dispatch = 1.0 if case == "pushing" else 0.0
        s = scenario([plain("a", 2, 1.0)], [10.0, 4.0], dispatch_s=dispatch, s_per_byte=0.0)
        both = (Assignment("a", ("t0",)), Assignment("a", ("t1",)))
        policy = Dealt(*both) if case == "pushing" else OneByOne(*both)
    monkeypatch.setattr(sim, "make_policy", lambda name, scenario, **settings: policy)
    result = sim.simulate(s, "scripted")
    causes = ("pushing", "queued", "tail", "raced", "dropped")
    assert result.losses == pytest.approx({c: expected.get(c, 0.0) for c in causes})
    work = sum(s.costs.values()) / result.capacity
    assert work + sum(result.losses.values()) == pytest.approx(1.0)


def test_on_a_whole_scenario_every_unit_of_capacity_is_work_or_a_loss() -> None:
    # Copies, stalls, a dropout, background load: what was computed is the work plus what
    # was thrown away, and the idle rest is split by cause, for every policy.
    s = make_scenario(1)
    total = sum(s.costs.values())
    results = {policy: simulate(s, policy) for policy in POLICIES}
    for policy, result in results.items():
        assert all(share >= 0 for share in result.losses.values()), policy
        assert total / result.capacity + sum(result.losses.values()) == pytest.approx(1.0), policy
    assert results["edgectl"].losses["dropped"] > 0  # seed 1's node01 drops mid-task


# ---- giving back ---------------------------------------------------------------------------


class ChunkThenTakeBack:
    """A scripted policy: t0..t2 as one chunk on `a`; at `ask_at`, ask back t1 and t2."""

    def __init__(self, ask_at: float) -> None:
        self.ask_at = ask_at
        self.dealt = self.asked = False
        self.answers: list[tuple[float, list[str]]] = []
        self.queue: list[str] = []
        self.done: set[str] = set()

    def update_nodes(self, nodes: Sequence[NodeState], now: float) -> None:
        """Nothing to learn."""

    def add_job(self, job: JobSpec, tasks: Sequence[TaskSpec], now: float) -> None:
        """Nothing to queue: the chunk is fixed."""

    def assign(self, now: float) -> list[Assignment]:
        """The chunk first, then whatever came back, one task at a time to `b`."""
        out = [Assignment("b", (t,)) for t in self.queue]
        if not self.dealt:
            self.dealt = True
            out.append(Assignment("a", ("t0", "t1", "t2")))
        self.queue = []
        return out

    def take_back(self, now: float) -> list[TakeBack]:
        """Once, at the first event at or after `ask_at`."""
        if self.asked or now < self.ask_at:
            return []
        self.asked = True
        return [TakeBack("a", ("t1", "t2"))]

    def taken_back(self, request: TakeBack, returned: Iterable[str], now: float) -> list[str]:
        """Note the answer; queue what came back."""
        self.answers.append((now, list(returned)))
        self.queue += list(returned)
        return list(returned)

    def task_started(self, task_id: str, node: str, now: float) -> None:
        """Nothing to learn."""

    def task_finished(
        self, task_id: str, node: str, seconds: float, now: float, work: float | None = None
    ) -> list[str]:
        """No copies."""
        self.done.add(task_id)
        return []

    def node_lost(self, node: str, now: float) -> list[str]:
        """What `a` had not finished goes to `b`."""
        lost = [t for t in ("t0", "t1", "t2") if t not in self.done and t not in self.queue]
        self.queue += lost
        return lost


@pytest.mark.parametrize(
    ("drop_at", "answer"),
    [
        (None, (7.0, ["t2"])),  # t1 began at 6, before the claim reached the node at 7
        (6.5, (7.0, [])),  # the node is gone: nothing can be claimed
    ],
)
def test_a_take_back_returns_what_is_unstarted_when_it_reaches_the_node(
    monkeypatch: pytest.MonkeyPatch, drop_at: float | None, answer: tuple[float, list[str]]
) -> None:
    nodes = [plain("a", 1, 1.0, drop_at=drop_at), plain("b", 1, 1.0)]
    s = scenario(nodes, [5.0, 5.0, 5.0], dispatch_s=1.0, s_per_byte=0.0, probe_every_s=10.0)
    policy = ChunkThenTakeBack(ask_at=6.0)  # t0 computes from 1 to 6 (after a 1 s dispatch)
    monkeypatch.setattr(sim, "make_policy", lambda name, scenario, **settings: policy)
    result = sim.simulate(s, "scripted")
    assert policy.answers == [answer]
    # With t2 back, b runs it at once; otherwise the loss is found at the probe at 10, and
    # b runs t1 and t2 side by side on its one core.
    assert result.makespan == pytest.approx(13.0 if drop_at is None else 10.0 + 1 + 2 * 5.0)
    assert result.duplicated_work == 0.0


def test_giving_back_rescues_chunks_on_a_node_that_slowed() -> None:
    # One slot per core and long chunks: `a` slows soon after taking its own; without
    # giving back, b idles while a grinds through them.
    nodes = [plain("a", 2, 4.0, slow_at=3.0), plain("b", 2, 4.0)]
    s = scenario(nodes, [1.0] * 300, probe_every_s=2.0, dispatch_s=0.5, s_per_byte=0.0)
    long_chunks = {"chunk_divisor": 1.0, "extra_slots": 0}
    kept = simulate(s, "edgectl-nodup", give_back=False, **long_chunks)
    given = simulate(s, "edgectl-nodup", **long_chunks)
    assert given.makespan < 0.5 * kept.makespan
    assert given.ratio < 1.2
    assert given.duplicated_work == 0.0
