"""The scheduler as a pure function: filters, scores, chunks, jobs, failures, copies, explain."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from edgectl.errors import UsageError
from edgectl.inventory.model import Node
from edgectl.scheduler import (
    Assignment,
    Dispatcher,
    JobSpec,
    JobStatus,
    NodeState,
    SchedulerConfig,
    TakeBack,
    TaskSpec,
    TaskStatus,
    explanation_to_dict,
)
from edgectl.scheduler.baselines import RoundRobin, StaticSplit
from edgectl.scheduler.planning import Candidate, SlotPool, list_schedule
from edgectl.scheduler.rates import RateBook
from edgectl.scheduler.speculation import Straggler, expected_waste

NOW = 1000.0
MB = 1_000_000


def node(name: str, **fields: object) -> NodeState:
    """A reachable, freshly probed node with 4 idle cores and plenty of room."""
    base = NodeState(
        name=name,
        cores=4,
        load1=0.0,
        mem_available=4_000 * MB,
        disk_free=100_000 * MB,
        langs=frozenset({"eng", "deu"}),
        probed_at=NOW,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def tasks(
    job: str, count: int, work: float = 10.0, size: int = MB, **fields: object
) -> list[TaskSpec]:
    """`count` alike tasks of one job, each with its own input."""
    return [
        TaskSpec(f"{job}-{i:03d}", job, {f"{job}-in{i:03d}": size}, work=work, **fields)  # type: ignore[arg-type]
        for i in range(count)
    ]


def dispatcher(
    *nodes: NodeState, rates: dict[str, float] | None = None, **config: object
) -> Dispatcher:
    """A dispatcher that knows these nodes, with per-core rates already learned if given."""
    d = Dispatcher(SchedulerConfig(**config))  # type: ignore[arg-type]
    d.update_nodes(nodes, NOW)
    for name, rate in (rates or {}).items():
        for _ in range(5):  # a settled rate, not one noisy sample
            d.rates.observe(name, rate, 1.0)
    return d


def one_slot_pair(first: str, second: str, **config: object) -> Dispatcher:
    """Two one-core nodes of the same learned rate, one slot each."""
    rates = {first: 1.0, second: 1.0}
    nodes = (node(first, cores=1), node(second, cores=1))
    return dispatcher(*nodes, rates=rates, extra_slots=0, **config)


def finish(d: Dispatcher, assignment: Assignment, now: float, seconds: float = 1.0) -> float:
    """Report every task of an assignment done, one after the other; return the end time."""
    for task_id in assignment.task_ids:
        d.task_started(task_id, assignment.node, now)
        now += seconds
        d.task_finished(task_id, assignment.node, seconds, now)
    return now


def verdicts(d: Dispatcher, now: float = NOW, job_id: str | None = None) -> dict[str, list[str]]:
    """Node name -> reasons it is rejected (empty when eligible)."""
    return {n.node: n.reasons for n in d.explain(now, job_id).nodes}


# ---- filtering ----------------------------------------------------------------------------

REJECTIONS = [
    ("stale facts", node("n", probed_at=NOW - 1000), JobSpec("j"), {}, "facts stale"),
    ("never probed", node("n", probed_at=None), JobSpec("j"), {}, "never probed"),
    ("unreachable", node("n", reachable=False), JobSpec("j"), {}, "unreachable"),
    (
        "missing language",
        node("n", langs=frozenset({"eng"})),
        JobSpec("j", requires_langs=("deu",)),
        {},
        "missing tesseract language(s): deu",
    ),
    (
        "no tesseract",
        node("n", langs=frozenset()),
        JobSpec("j", requires_langs=("eng",)),
        {},
        "no tesseract",
    ),
    (
        "selector mismatch",
        node("n", groups=("cameras",)),
        JobSpec("j", selector="@gateways"),
        {},
        "selector '@gateways' does not match",
    ),
    (
        "selector on a label",
        node("n", labels={"arch": "arm64"}),
        JobSpec("j", selector="arch=amd64"),
        {},
        "does not match",
    ),
    (
        "memory too small",
        node("n", mem_available=100 * MB),
        JobSpec("j", mem_per_task=500 * MB),
        {},
        "memory: 100.0 MB available < 500.0 MB per task",
    ),
    ("disk too small", node("n", disk_free=2 * MB), JobSpec("j"), {"size": 5 * MB}, "disk:"),
]


@pytest.mark.parametrize(
    ("state", "job", "task_fields", "reason"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_a_rejected_node_says_why(
    state: NodeState, job: JobSpec, task_fields: dict[str, int], reason: str
) -> None:
    ok = node("ok", groups=("gateways",), labels={"arch": "amd64"})
    d = dispatcher(state, ok, max_fact_age_s=300)
    d.add_job(job, tasks(job.id, 3, **task_fields), NOW)
    why = verdicts(d)
    assert any(reason in r for r in why["n"]), why["n"]
    assert why["ok"] == []
    assert all(a.node == "ok" for a in d.assign(NOW))


def test_eligible_nodes_have_no_reasons_and_selectors_see_facts() -> None:
    d = dispatcher(node("fast", cores=8), node("busy", cores=2, load1=1.9))
    d.add_job(JobSpec("j", selector="cores>=4"), tasks("j", 2), NOW)
    assert verdicts(d) == {"fast": [], "busy": ["selector 'cores>=4' does not match"]}


def test_a_node_failing_tasks_in_a_row_is_excluded() -> None:
    d = dispatcher(node("bad", cores=1), node("good", cores=1), exclude_after_failures=3)
    d.add_job(JobSpec("j"), tasks("j", 6), NOW)
    now = NOW
    for _ in range(3):
        for a in d.assign(now):
            if a.node == "bad":
                d.task_failed(a.task_ids[0], "bad", "tesseract crashed", now)
            else:
                now = finish(d, a, now)
    assert "bad" in d.excluded_nodes()
    assert any("excluded" in r for r in verdicts(d, now)["bad"])
    assert all(a.node == "good" for a in d.assign(now))


def test_a_success_resets_the_failure_streak() -> None:
    d = dispatcher(node("n", cores=1), exclude_after_failures=2, extra_slots=0)
    d.add_job(JobSpec("j"), tasks("j", 3), NOW)
    (first,) = d.assign(NOW)
    d.task_failed(first.task_ids[0], "n", "oops", NOW)
    (second,) = d.assign(NOW)
    finish(d, second, NOW)
    (third,) = d.assign(NOW + 1)
    d.task_failed(third.task_ids[0], "n", "oops", NOW + 1)
    assert d.excluded_nodes() == {}


# ---- scoring ------------------------------------------------------------------------------


def placed_on(d: Dispatcher, task_id: str) -> str:
    """Where the dry run puts a task."""
    return next(p.node for p in d.plan(NOW).placements if p.task_id == task_id)


def test_a_faster_node_is_preferred() -> None:
    d = dispatcher(node("slow"), node("fast"), rates={"slow": 1.0, "fast": 4.0})
    d.add_job(JobSpec("j"), tasks("j", 1, work=40), NOW)
    assert placed_on(d, "j-000") == "fast"
    assert [a.node for a in d.assign(NOW)] == ["fast"]


def test_a_less_loaded_node_is_preferred() -> None:
    d = dispatcher(node("loaded", load1=3.6), node("idle"), rates={"loaded": 1.0, "idle": 1.0})
    d.add_job(JobSpec("j"), tasks("j", 1, work=40), NOW)
    assert placed_on(d, "j-000") == "idle"


def test_before_any_result_the_prior_follows_cores_and_free_load() -> None:
    d = dispatcher(node("small", cores=2), node("big", cores=8, load1=2.0))
    small, big = (n for n in d.explain(NOW).nodes)
    # Free cores plus two: one to overlap uploads, one more waiting at the node's gate.
    assert (small.slots, big.slots) == (4, 8)
    assert small.rate_source == big.rate_source == "prior"


@pytest.mark.parametrize(
    ("local_rate", "other_rate", "expected"),
    [
        (1.0, 1.0, "local"),  # same speed: pushing 100 MB costs more than nothing
        (1.0, 1.5, "local"),  # a little faster does not pay for the transfer
        (0.05, 4.0, "other"),  # data is a saving, not a pin: a much faster node wins
    ],
)
def test_data_locality_is_a_saving_not_a_pin(
    local_rate: float, other_rate: float, expected: str
) -> None:
    d = dispatcher(
        node("local", has_inputs=frozenset({"j-in000"})),
        node("other"),
        rates={"local": local_rate, "other": other_rate},
        transfer_s_per_byte=1e-7,  # 10 MB/s: 10 s for the input
    )
    d.add_job(JobSpec("j"), tasks("j", 1, work=8, size=100 * MB), NOW)
    assert placed_on(d, "j-000") == expected


def test_rates_are_learned_from_finished_tasks() -> None:
    d = dispatcher(node("a"), node("b"))
    d.add_job(JobSpec("j"), tasks("j", 40, work=10), NOW)
    first = d.assign(NOW)
    assert {a.node for a in first} == {"a", "b"}  # probes on both
    for a in first:
        finish(d, a, NOW, seconds=10.0 if a.node == "a" else 1.0)
    by_node = {n.node: n for n in d.explain(NOW + 10).nodes}
    assert by_node["b"].rate > 5 * by_node["a"].rate
    assert by_node["a"].rate_source == "observed"


# ---- chunks ---------------------------------------------------------------------------------


def test_chunks_shrink_as_the_remaining_work_shrinks() -> None:
    d = dispatcher(node("a", cores=2), node("b", cores=2), rates={"a": 1.0, "b": 1.0})
    d.add_job(JobSpec("j"), tasks("j", 200, work=1.0), NOW)
    sizes, now = [], NOW
    while not d.finished:
        batch = d.assign(now)
        assert batch, "work is queued but nothing was assigned"
        sizes += [len(a.task_ids) for a in batch]
        now = max(finish(d, a, now, seconds=1.0) for a in batch)
    assert sizes[0] >= 5
    assert sizes[-1] == 1
    assert sizes[: len(sizes) // 4] > sizes[-len(sizes) // 4 :]
    assert sum(sizes) == 200


def test_faster_nodes_take_bigger_chunks() -> None:
    d = dispatcher(node("slow", cores=1), node("fast", cores=1), rates={"slow": 1.0, "fast": 4.0})
    d.add_job(JobSpec("j"), tasks("j", 100, work=1.0), NOW)
    chunk = {a.node: len(a.task_ids) for a in d.assign(NOW)}
    assert chunk["fast"] >= 2 * chunk["slow"]


def test_a_task_its_job_would_end_with_runs_favoured() -> None:
    # 2 nodes x 4 cores at rate 1 (6 slots each): the job's 95 work spread over them takes
    # under 12 s; the 40-work task alone takes 40 s on any slot, the 5-work ones 5 s.
    d = dispatcher(node("a"), node("b"), rates={"a": 1.0, "b": 1.0})
    d.add_job(JobSpec("j"), [*tasks("j", 11, work=5.0), TaskSpec("big", "j", {}, work=40.0)], NOW)
    placed = d.assign(NOW)
    favoured = [a.task_ids for a in placed if a.favoured]
    assert favoured == [("big",)]
    assert len(placed) == 12


def test_a_long_task_sent_as_a_node_s_probe_runs_favoured() -> None:
    # No rates yet: the small tasks go first, as probes; once only the long one is left,
    # it is the probe of the last free slot, and favoured like any task its job ends with.
    d = dispatcher(node("a", cores=2), node("b", cores=2))
    d.add_job(JobSpec("j"), [*tasks("j", 7, work=1.0), TaskSpec("big", "j", {}, work=40.0)], NOW)
    first = d.assign(NOW)
    assert len(first) == 7 and not any(a.favoured for a in first)
    [probe] = d.assign(NOW + 0.01)
    assert probe.task_ids == ("big",) and probe.favoured


def test_alike_tasks_run_unfavoured_and_the_knob_turns_favour_off() -> None:
    d = dispatcher(node("a"), node("b"), rates={"a": 1.0, "b": 1.0})
    d.add_job(JobSpec("j"), tasks("j", 40, work=5.0), NOW)
    assert not any(a.favoured for a in d.assign(NOW))
    off = dispatcher(node("a"), node("b"), rates={"a": 1.0, "b": 1.0}, favour_long=False)
    off.add_job(JobSpec("j"), [*tasks("j", 11, work=5.0), TaskSpec("big", "j", {}, work=40.0)], NOW)
    assert not any(a.favoured for a in off.assign(NOW))


def test_a_favoured_task_is_learned_from_as_having_a_whole_core() -> None:
    # Two free cores: a favoured task has a whole one, and the two others past the gate
    # share the core left. A favoured task of 40 work done in 40 s keeps the per-core rate
    # at 1; counted as having half a core, it would pull the rate up to 1.3.
    d = dispatcher(node("a", cores=2), rates={"a": 1.0})
    d.add_job(JobSpec("j"), [*tasks("j", 2, work=5.0), TaskSpec("big", "j", {}, work=40.0)], NOW)
    placed = {a.task_ids[0]: a for a in d.assign(NOW)}
    assert placed["big"].favoured
    finish(d, placed["big"], NOW, seconds=40.0)
    assert d.rates.observed("a") == pytest.approx(1.0)


@pytest.mark.parametrize(("favoured", "rate"), [(True, 1.0), (False, 2.0)])
def test_a_task_adopted_after_a_restart_keeps_its_share_of_a_core(
    favoured: bool, rate: float
) -> None:
    # Two cores, a favoured chunk holding one: 40 work in 40 s is a per-core rate of 1
    # with a whole core, 2 with the half core an unfavoured task has past the gate.
    d = dispatcher(node("a", cores=2))
    d.add_job(JobSpec("j"), [TaskSpec("big", "j", {}, work=40.0), *tasks("j", 1, work=40.0)], NOW)
    d.adopt("a", ["j-000"], NOW, favoured=True)
    d.adopt("a", ["big"], NOW, favoured=favoured)
    d.task_started("big", "a", NOW)
    d.task_finished("big", "a", 40.0, NOW + 40)
    assert d.rates.observed("a") == pytest.approx(rate)


@pytest.mark.parametrize("hold", [True, False])
def test_a_slot_is_held_for_the_long_task_of_a_job_about_to_be_released(hold: bool) -> None:
    # "after" comes after "first", whose one task runs on a until NOW + 10. Its 30-work
    # task should start then on b (twice as fast), so b, free now, is held: it runs only
    # what ends by then (the 3-work task of "scan"), not scan's 30-work task.
    d = dispatcher(
        node("a", cores=1),
        node("b", cores=1),
        rates={"a": 1.0, "b": 2.0},
        extra_slots=0,
        hold_for_long=hold,
    )
    d.add_job(JobSpec("first"), [TaskSpec("first-0", "first", {}, work=10.0, only_on="a")], NOW)
    [running] = d.assign(NOW)
    d.task_started("first-0", "a", NOW)
    assert running.node == "a"
    d.add_job(JobSpec("after", after=("first",)), [TaskSpec("long", "after", {}, work=30.0)], NOW)
    scan = [
        TaskSpec("scan-big", "scan", {}, work=30.0),
        TaskSpec("scan-small", "scan", {}, work=3.0),
    ]
    d.add_job(JobSpec("scan"), scan, NOW)
    [placed] = d.assign(NOW)
    assert placed.node == "b"
    assert placed.task_ids == (("scan-small",) if hold else ("scan-big",))


# ---- jobs -------------------------------------------------------------------------------


def test_higher_priority_goes_first() -> None:
    d = dispatcher(node("n", cores=1), rates={"n": 1.0}, extra_slots=0)
    d.add_job(JobSpec("low", priority=0), tasks("low", 3, work=50), NOW)
    d.add_job(JobSpec("high", priority=9), tasks("high", 3, work=5), NOW)
    order = [p.job_id for p in sorted(d.plan(NOW).placements, key=lambda p: p.start_s)]
    assert order == ["high"] * 3 + ["low"] * 3
    (a,) = d.assign(NOW)
    assert [t.split("-")[0] for t in a.task_ids][:3] == ["high"] * 3


def test_a_job_after_another_waits_until_it_is_done() -> None:
    d = dispatcher(node("n", cores=2), rates={"n": 1.0})
    d.add_job(JobSpec("second", after=("first",)), tasks("second", 2), NOW)
    d.add_job(JobSpec("first"), tasks("first", 2), NOW)
    assert d.job_status("second") is JobStatus.WAITING
    plan = d.plan(NOW)
    first_end = max(p.finish_s for p in plan.placements if p.job_id == "first")
    assert all(p.start_s >= first_end - 1e-9 for p in plan.placements if p.job_id == "second")
    batch = d.assign(NOW)
    assert {t.split("-")[0] for a in batch for t in a.task_ids} == {"first"}
    now = max(finish(d, a, NOW) for a in batch)
    while d.job_status("first") is not JobStatus.DONE:
        now = max([finish(d, a, now) for a in d.assign(now)], default=now)
    assert d.job_status("second") is JobStatus.READY
    assert {t.split("-")[0] for a in d.assign(now) for t in a.task_ids} == {"second"}


def test_a_job_after_one_done_elsewhere_is_released() -> None:
    d = dispatcher(node("n"))
    d.add_job(JobSpec("j", after=("yesterday",)), tasks("j", 1), NOW)
    assert d.assign(NOW) == []
    assert "waiting for job(s) yesterday" in d.plan(NOW).unplaceable["j-000"]
    d.job_done("yesterday")
    assert [a.task_ids for a in d.assign(NOW)] == [("j-000",)]


def test_a_job_after_a_failed_one_fails() -> None:
    d = dispatcher(node("a", cores=1), node("b", cores=1), rates={"a": 1.0, "b": 1.0})
    d.add_job(JobSpec("first"), tasks("first", 1), NOW)
    d.add_job(JobSpec("second", after=("first",)), tasks("second", 1), NOW)
    for _ in range(2):
        (a,) = d.assign(NOW)
        d.task_failed("first-000", a.node, f"broken on {a.node}", NOW)
    assert d.job_status("first") is JobStatus.FAILED
    assert d.job_status("second") is JobStatus.FAILED
    assert d.task_status("second-000") is TaskStatus.FAILED
    assert d.finished


def test_add_job_refuses_bad_input() -> None:
    d = dispatcher(node("n"))
    with pytest.raises(UsageError):
        d.add_job(JobSpec("j", selector="bad selector!"), [], NOW)
    with pytest.raises(ValueError, match="belongs to job"):
        d.add_job(JobSpec("j"), tasks("other", 1), NOW)
    d.add_job(JobSpec("j"), [], NOW)
    assert d.job_status("j") is JobStatus.DONE
    with pytest.raises(ValueError, match="already added"):
        d.add_job(JobSpec("j"), [], NOW)


# ---- failures and lost nodes --------------------------------------------------------------


def test_a_task_failing_on_two_nodes_fails_with_both_reasons() -> None:
    d = dispatcher(node("a", cores=1), node("b", cores=1), node("c", cores=1))
    d.add_job(JobSpec("j"), tasks("j", 1), NOW)
    (first,) = d.assign(NOW)
    assert d.task_failed("j-000", first.node, "out of memory", NOW) is TaskStatus.QUEUED
    (second,) = d.assign(NOW)
    assert second.node != first.node  # never retried where it failed
    assert d.task_failed("j-000", second.node, "segfault", NOW) is TaskStatus.FAILED
    assert d.task_failures("j-000") == {first.node: "out of memory", second.node: "segfault"}
    assert d.job_status("j") is JobStatus.FAILED
    assert d.assign(NOW) == []


def test_tasks_of_a_lost_node_are_placed_elsewhere() -> None:
    d = dispatcher(
        node("a", cores=1), node("b", cores=1), rates={"a": 1.0, "b": 1.0}, extra_slots=0
    )
    d.add_job(JobSpec("j"), tasks("j", 2, work=100), NOW)
    running = {a.node: a.task_ids for a in d.assign(NOW)}
    assert set(running) == {"a", "b"}
    assert d.node_lost("a", NOW + 5) == list(running["a"])
    assert d.task_status(running["a"][0]) is TaskStatus.QUEUED
    assert "lost" in " ".join(verdicts(d, NOW + 5)["a"])
    finish(d, Assignment("b", running["b"]), NOW + 5)
    assert [a.node for a in d.assign(NOW + 6)] == ["b"]
    d.update_nodes([node("a", probed_at=NOW + 10)], NOW + 10)  # back, seen by a probe
    assert verdicts(d, NOW + 10)["a"] == []


# ---- speculative copies -------------------------------------------------------------------


def straggling(cap: float = 0.10, **config: Any) -> tuple[Dispatcher, str]:
    """Two observed nodes, each with a task of 10 units; `fast` has finished its own."""
    d = one_slot_pair("slow", "fast", duplicate_work_cap=cap, **config)
    d.add_job(JobSpec("j"), tasks("j", 2, work=10), NOW)
    batch = {a.node: a for a in d.assign(NOW)}
    for a in batch.values():
        d.task_started(a.task_ids[0], a.node, NOW)
    d.task_finished(batch["fast"].task_ids[0], "fast", 10.0, NOW + 10)
    return d, batch["slow"].task_ids[0]


def test_a_late_task_is_copied_to_an_idle_node_at_the_tail() -> None:
    d, late = straggling(cap=0.5)
    assert d.assign(NOW + 12) == []  # a little late: no copy
    (copy,) = d.assign(NOW + 50)
    assert copy == Assignment("fast", (late,), duplicate_of="slow")
    assert d.running_on(late) == ["fast", "slow"]
    d.task_started(late, "fast", NOW + 50)
    assert d.task_finished(late, "fast", 10.0, NOW + 60) == ["slow"]  # first result wins
    assert d.task_finished(late, "slow", 60.0, NOW + 61) == []
    assert d.task_status(late) is TaskStatus.DONE
    assert d.duplicated_work == 10.0


def test_copies_stay_within_the_cap() -> None:
    d, _ = straggling(cap=0.10)  # 10% of 20 work units: the copy's waste does not fit
    assert d.assign(NOW + 50) == []
    assert d.duplicated_work == 0.0


def test_a_copy_bigger_than_the_budget_goes_when_what_it_would_waste_fits() -> None:
    # 40% of 20 units is 8: less than the 10-unit task, but the copy would waste only what
    # the original computed, about 5.6 units by now plus its slow progress during the copy.
    d, late = straggling(cap=0.40)
    (copy,) = d.assign(NOW + 50)
    assert copy == Assignment("fast", (late,), duplicate_of="slow")
    assert d.duplicated_work <= 8.0


def test_the_late_tail_of_a_job_others_wait_for_may_spend_the_whole_budget() -> None:
    # Queued work of another job keeps every slot wanted, so the copy is an early one; the
    # late task holds up job `b`, so it may use the whole cap (15% of 60 units is 9), not
    # the quarter kept for other early copies.
    d = one_slot_pair("slow", "fast", duplicate_work_cap=0.15)
    d.add_job(JobSpec("a", priority=5), tasks("a", 1), NOW)
    d.add_job(JobSpec("b", after=("a",)), tasks("b", 1), NOW)
    d.add_job(JobSpec("c"), tasks("c", 4), NOW)
    batch = {x.node: x for x in d.assign(NOW)}
    assert batch["slow"].task_ids == ("a-000",)
    for x in batch.values():
        d.task_started(x.task_ids[0], x.node, NOW)
    d.task_finished(batch["fast"].task_ids[0], "fast", 10.0, NOW + 10)
    copies = [x for x in d.assign(NOW + 50) if x.duplicate_of]
    assert copies == [Assignment("fast", ("a-000",), duplicate_of="slow")]
    assert 2.25 < d.duplicated_work <= 9.0


def test_expected_waste_is_the_originals_work_until_the_copy_ends() -> None:
    task = TaskSpec("t", "j", {}, work=100.0)
    # 40 units left, 80 s to go: 0.5 unit/s. A 20 s copy wastes the 60 done and 10 more.
    slowed = Straggler(task, "n", remaining_s=80.0, seq=0, work_left=40.0)
    assert expected_waste(slowed, 20.0) == pytest.approx(70.0)
    assert expected_waste(slowed, 200.0) == 100.0  # never more than the whole task
    due = Straggler(task, "n", remaining_s=0.0, seq=0, work_left=0.0)
    assert expected_waste(due, 20.0) == 100.0


def test_no_copy_of_a_late_task_that_will_not_be_the_last_to_end() -> None:
    d = one_slot_pair("slow", "fast", chunk_divisor=1000)  # one task per chunk
    d.add_job(JobSpec("j"), tasks("j", 40, work=10), NOW)
    batch = {a.node: a for a in d.assign(NOW)}
    d.task_started(batch["slow"].task_ids[0], "slow", NOW)
    fast = batch["fast"]
    now = finish(d, fast, NOW, seconds=10.0)
    for a in d.assign(now + 25):
        assert a.duplicate_of is None
    assert d.duplicated_work == 0.0


def test_with_nothing_queued_an_idle_node_copies_the_last_task_even_if_others_end_as_late() -> None:
    # Two 10-unit tasks run on one-unit nodes and should end together in 5 s: neither
    # stands out from the other, but the idle fast node would end one in 2.6 s. The run
    # ends with them, so the one added first is copied (half the 20 units of budget fit
    # one copy's expected waste of 7.6, not two).
    rates = {"slow1": 1.0, "slow2": 1.0, "fast": 4.0}
    nodes = (node("slow1", cores=1), node("slow2", cores=1), node("fast", cores=1))
    d = dispatcher(*nodes, rates=rates, extra_slots=0, duplicate_work_cap=0.5)
    d.add_job(JobSpec("j"), tasks("j", 2), NOW)
    d.adopt("slow1", ["j-000"], NOW)
    d.adopt("slow2", ["j-001"], NOW)
    assert d.assign(NOW + 5) == [Assignment("fast", ("j-000",), duplicate_of="slow1")]
    assert d.running_on("j-001") == ["slow2"]


def test_copies_can_be_turned_off() -> None:
    d, _ = straggling(cap=0.5, duplicates=False)  # the cap would allow the copy
    assert d.assign(NOW + 100) == []


# ---- determinism and explain --------------------------------------------------------------


def drive(seed_nodes: list[NodeState]) -> list[Assignment]:
    """A small run, recorded."""
    d = dispatcher(*seed_nodes)
    d.add_job(JobSpec("a", priority=1), tasks("a", 30, work=3), NOW)
    d.add_job(JobSpec("b", after=("a",)), tasks("b", 20, work=7), NOW)
    log, now = [], NOW
    while not d.finished:
        batch = d.assign(now)
        log += batch
        ends = [finish(d, a, now, seconds=2.0 if a.node == "n1" else 1.0) for a in batch]
        now = max(ends, default=now + 1)
    return log


def test_the_same_calls_give_the_same_decisions() -> None:
    fleet = [node("n1"), node("n2", cores=2), node("n3", cores=8, load1=3.0)]
    first, second = drive(fleet), drive(fleet)
    assert first == second
    assert sum(len(a.task_ids) for a in first) >= 50


def test_explain_gives_per_node_verdicts_score_parts_and_makespan() -> None:
    d = dispatcher(
        node("fast"),
        node("slow", cores=1),
        node("down", reachable=False),
        rates={"fast": 4.0, "slow": 0.5},
    )
    d.add_job(JobSpec("j"), tasks("j", 12, work=20), NOW)
    running = d.assign(NOW)
    explanation = d.explain(NOW + 1)
    by_node = {n.node: n for n in explanation.nodes}
    assert by_node["down"].eligible is False
    assert by_node["down"].verdict.startswith("rejected: unreachable")
    assert by_node["fast"].eligible and by_node["fast"].verdict.startswith("chosen")
    fast = by_node["fast"]
    assert fast.rate_source == "observed" and fast.rate > by_node["slow"].rate
    assert fast.wait_s > 0 and fast.compute_s > 0 and fast.transfer_s >= 0
    assert fast.finish_s == pytest.approx(explanation.makespan_s, rel=0.5)
    assert explanation.makespan_s > 0
    (job,) = explanation.jobs
    assert (job.id, job.status, job.running) == (
        "j",
        "ready",
        len({t for a in running for t in a.task_ids}),
    )
    data = explanation_to_dict(explanation)
    assert json.loads(json.dumps(data))["nodes"][0]["node"] == "fast"


def test_explain_for_one_job_uses_that_jobs_filters() -> None:
    d = dispatcher(node("eng", langs=frozenset({"eng"})), node("both"))
    d.add_job(JobSpec("german", requires_langs=("deu",)), tasks("german", 2), NOW)
    d.add_job(JobSpec("english", requires_langs=("eng",)), tasks("english", 2), NOW)
    assert verdicts(d)["eng"] == []  # it can run one of the jobs
    assert verdicts(d, job_id="german")["eng"] == ["missing tesseract language(s): deu"]


def test_node_state_from_inventory_and_facts_records() -> None:
    inventory = Node(name="cam-01", host="10.0.0.5", groups=["cameras"], labels={"site": "sh"})
    latest = {
        "reachable": True,
        "probed_at": NOW,
        "facts": {"cores": 4, "load1": 0.5, "tesseract": "5.3.0", "tesseract_langs": ["eng"]},
    }
    state = NodeState.from_records(inventory, latest, frozenset({"page-1"}))
    assert (state.name, state.cores, state.langs, state.groups) == (
        "cam-01",
        4,
        frozenset({"eng"}),
        ("cameras",),
    )
    d = dispatcher(state)
    d.add_job(JobSpec("j", selector="host=10.0.0.*,&site=sh"), tasks("j", 1), NOW)
    assert verdicts(d)["cam-01"] == []


# ---- baselines ----------------------------------------------------------------------------


def test_round_robin_deals_tasks_in_turn_one_per_core() -> None:
    policy = RoundRobin()
    policy.update_nodes([node("a", cores=1), node("b", cores=2)], NOW)
    policy.add_job(JobSpec("j"), tasks("j", 6), NOW)
    assert [(a.node, a.task_ids) for a in policy.assign(NOW)] == [
        ("a", ("j-000",)),
        ("b", ("j-001",)),
        ("b", ("j-003",)),
    ]


def test_static_split_divides_inputs_evenly_upfront() -> None:
    policy = StaticSplit()
    policy.update_nodes([node("a", cores=1), node("b", cores=2)], NOW)
    policy.add_job(JobSpec("j"), tasks("j", 6), NOW)
    assert [(a.node, len(a.task_ids)) for a in policy.assign(NOW)] == [
        ("a", 3),
        ("b", 2),
        ("b", 1),
    ]


# ---- what the job executor needs -----------------------------------------------------------


def test_a_kinds_capability_test_rejects_a_node_with_its_reason() -> None:
    def needs_gpu(facts: object) -> str | None:
        return None if dict(facts).get("gpu") else "no gpu"  # type: ignore[call-overload]

    d = dispatcher(node("plain"), node("gpu", facts={"gpu": "yes"}))
    d.add_job(JobSpec("j", capability=needs_gpu), tasks("j", 4), NOW)
    assert verdicts(d) == {"plain": ["no gpu"], "gpu": []}
    assert {a.node for a in d.assign(NOW)} == {"gpu"}


def test_an_input_that_lives_on_one_node_runs_only_there() -> None:
    d = dispatcher(node("a"), node("b"), rates={"a": 1.0, "b": 100.0})
    d.add_job(JobSpec("j"), tasks("j", 3, only_on="a"), NOW)
    assert {a.node for a in d.assign(NOW)} == {"a"}
    assert d.plan(NOW).unplaceable == {}


def test_unknown_nodes_are_measured_one_slot_each_before_second_slots() -> None:
    d = dispatcher(node("a"), node("b"), node("c"), node("d"))  # 5 slots each
    d.add_job(JobSpec("j"), tasks("j", 4), NOW)
    assert sorted(a.node for a in d.assign(NOW)) == ["a", "b", "c", "d"]


def test_a_chunk_holds_the_tasks_of_one_job_only() -> None:
    d = dispatcher(node("n", cores=1), rates={"n": 100.0}, extra_slots=0)
    d.add_job(JobSpec("x"), tasks("x", 3, work=1), NOW)
    d.add_job(JobSpec("y"), tasks("y", 3, work=1), NOW)
    (chunk,) = d.assign(NOW)
    assert len({t.split("-")[0] for t in chunk.task_ids}) == 1


def test_computed_tasks_free_their_slot_and_end_only_when_their_result_is_home() -> None:
    d = dispatcher(node("n", cores=1), rates={"n": 1.0}, extra_slots=0, chunk_divisor=0.1)
    d.add_job(JobSpec("j"), tasks("j", 4, work=1), NOW)
    (chunk,) = d.assign(NOW)
    assert len(chunk.task_ids) == 4
    d.task_started(chunk.task_ids[0], "n", NOW)
    for index, task_id in enumerate(chunk.task_ids):
        d.task_computed(task_id, "n", 1.0, NOW + index + 1)
    assert d.task_status(chunk.task_ids[0]) is TaskStatus.RUNNING  # not home yet
    samples = d.rates.samples["n"]
    for task_id in chunk.task_ids:
        assert d.task_finished(task_id, "n", 4.0, NOW + 5) == []
    assert d.rates.samples["n"] == samples  # each task learned from once
    assert d.finished


def test_a_task_whose_chunk_failed_after_computing_is_placed_again() -> None:
    d = dispatcher(node("a", cores=1), node("b", cores=1), rates={"a": 1.0, "b": 1.0})
    d.add_job(JobSpec("j"), tasks("j", 1, work=1), NOW)
    (first,) = d.assign(NOW)
    d.task_computed(first.task_ids[0], first.node, 1.0, NOW + 1)
    status = d.task_failed(first.task_ids[0], first.node, "download failed", NOW + 2)
    assert status is TaskStatus.QUEUED
    (again,) = d.assign(NOW + 2)
    assert again.node != first.node


def test_a_lost_node_gives_back_tasks_computed_but_not_home() -> None:
    d = dispatcher(node("a", cores=1), rates={"a": 1.0}, extra_slots=0)
    d.add_job(JobSpec("j"), tasks("j", 1, work=1), NOW)
    (chunk,) = d.assign(NOW)
    d.task_computed(chunk.task_ids[0], "a", 1.0, NOW + 1)
    assert d.node_lost("a", NOW + 2) == list(chunk.task_ids)


def test_a_returned_task_is_queued_without_blame_on_its_node() -> None:
    d = dispatcher(node("a", cores=1), extra_slots=0)
    d.add_job(JobSpec("j"), tasks("j", 1), NOW)
    (chunk,) = d.assign(NOW)
    assert d.task_returned(chunk.task_ids[0], "a", NOW + 1) is TaskStatus.QUEUED
    assert d.task_failures(chunk.task_ids[0]) == {}
    assert [a.node for a in d.assign(NOW + 1)] == ["a"]  # may go back to the same node


def test_adopted_tasks_hold_their_slot_after_a_restart() -> None:
    d = dispatcher(node("a", cores=1), extra_slots=0)
    d.add_job(JobSpec("j"), tasks("j", 2), NOW)
    d.adopt("a", ["j-000"], NOW)
    assert d.assign(NOW) == []  # its one slot is taken
    assert d.running_on("j-000") == ["a"]
    d.task_finished("j-000", "a", 1.0, NOW + 1)
    assert [a.task_ids for a in d.assign(NOW + 1)] == [("j-001",)]


def test_a_cancelled_job_returns_its_running_attempts_and_fails_jobs_after_it() -> None:
    d = dispatcher(node("a", cores=1), extra_slots=0)
    d.add_job(JobSpec("x"), tasks("x", 2), NOW)
    d.add_job(JobSpec("y", after=("x",)), tasks("y", 1), NOW)
    (chunk,) = d.assign(NOW)
    assert d.cancel_job("x", NOW + 1) == {"a": list(chunk.task_ids)}
    assert d.job_status("y") is JobStatus.FAILED
    assert "cancelled" in " ".join(d.explain(NOW + 1, "y").jobs[0].reasons)
    assert d.finished


def test_a_chunk_of_several_tasks_is_never_raced_by_a_copy() -> None:
    # Everything in one chunk per slot.
    d = one_slot_pair("slow", "fast", duplicate_work_cap=1.0, chunk_divisor=0.01)
    d.add_job(JobSpec("j"), tasks("j", 6, work=10), NOW)
    batch = {a.node: a for a in d.assign(NOW)}
    assert len(batch["slow"].task_ids) > 1
    d.task_started(batch["slow"].task_ids[0], "slow", NOW)
    finish(d, batch["fast"], NOW, seconds=10.0)
    assert all(a.duplicate_of is None for a in d.assign(NOW + 500))


def test_news_arriving_a_poll_late_is_not_taken_for_lateness() -> None:
    def late_copies(delay: float) -> list[Assignment]:
        d, _ = straggling(0.5, report_delay_s=delay)
        return [a for a in d.assign(NOW + 50) if a.duplicate_of]

    assert late_copies(0.0)
    assert late_copies(60.0) == []


def test_a_probe_of_an_unknown_node_never_takes_a_lower_priority_task_first() -> None:
    d = dispatcher(node("new", cores=1), extra_slots=0)
    d.add_job(JobSpec("low"), tasks("low", 8, work=2), NOW)  # sized like a probe
    d.add_job(JobSpec("high", priority=5), tasks("high", 2, work=50), NOW)
    (probe,) = d.assign(NOW)
    assert probe.task_ids[0].startswith("high")


# ---- giving back unstarted tasks ------------------------------------------------------------


def behind(**config: object) -> tuple[Dispatcher, Assignment, Assignment]:
    """Two one-slot nodes, each given a chunk of three; `a`'s first task then runs 4x late."""
    d = one_slot_pair("a", "b", chunk_divisor=0.01, **config)  # one chunk per slot
    d.add_job(JobSpec("j"), tasks("j", 6, work=10), NOW)
    batch = {a.node: a for a in d.assign(NOW)}
    assert [len(batch[n].task_ids) for n in "ab"] == [3, 3]
    for a in batch.values():
        d.task_started(a.task_ids[0], a.node, NOW)
    assert d.take_back(NOW + 5) == []  # on time: nothing asked back
    finish(d, batch["b"], NOW, seconds=10.0)  # b is done at NOW + 30
    return d, batch["a"], batch["b"]


def test_a_node_that_falls_behind_is_asked_for_its_unstarted_tasks() -> None:
    d, a, _ = behind()
    (request,) = d.take_back(NOW + 40)
    assert request == TakeBack("a", a.task_ids[1:])
    assert d.take_back(NOW + 41) == []  # asked once, until the answer comes
    assert all(d.running_on(t) == ["a"] for t in a.task_ids)  # still there until then


def test_no_take_back_when_turned_off() -> None:
    d, _, _ = behind(give_back=False)
    assert d.take_back(NOW + 40) == []


def test_only_the_tasks_the_node_had_not_started_come_back() -> None:
    d, a, _ = behind()
    (request,) = d.take_back(NOW + 40)
    first, started, unstarted = a.task_ids
    d.task_computed(first, "a", 40.5, NOW + 40.5)  # the node moved on before the claim
    d.task_started(started, "a", NOW + 40.5)
    assert d.taken_back(request, [unstarted], NOW + 41) == [unstarted]
    assert d.task_status(unstarted) is TaskStatus.QUEUED
    assert d.task_failures(unstarted) == {}  # no blame on the node
    assert d.running_on(started) == ["a"]
    assert [x.task_ids for x in d.assign(NOW + 41) if x.node == "b"] == [(unstarted,)]


def test_an_unreachable_node_gives_nothing_back_and_keeps_its_tasks() -> None:
    d, a, _ = behind()
    (request,) = d.take_back(NOW + 40)
    assert d.taken_back(request, [], NOW + 41) == []
    assert all(d.running_on(t) == ["a"] for t in a.task_ids)
    assert sorted(d.node_lost("a", NOW + 50)) == sorted(a.task_ids)  # re-placed as before


def test_a_chunks_last_task_is_copied_only_after_the_rest_came_back() -> None:
    d, a, _ = behind(duplicate_work_cap=1.0)
    (request,) = d.take_back(NOW + 40)
    assert [x for x in d.assign(NOW + 40) if x.duplicate_of] == []  # the rest still held
    d.taken_back(request, request.task_ids, NOW + 41)
    copies = [x for x in d.assign(NOW + 41) if x.duplicate_of]
    assert copies == [Assignment("b", (a.task_ids[0],), duplicate_of="a")]


def test_a_chunk_with_a_computed_task_not_home_is_not_raced() -> None:
    # Its computed result comes home with the chunk's process: killing it would lose it.
    d = one_slot_pair("a", "b", chunk_divisor=0.01, duplicate_work_cap=1.0)
    d.add_job(JobSpec("j"), tasks("j", 4, work=10), NOW)
    batch = {x.node: x for x in d.assign(NOW)}
    first, last = batch["a"].task_ids
    d.task_started(first, "a", NOW)
    d.task_computed(first, "a", 10.0, NOW + 10)
    d.task_started(last, "a", NOW + 10)
    finish(d, batch["b"], NOW, seconds=10.0)
    assert [x for x in d.assign(NOW + 200) if x.duplicate_of] == []
    d.task_finished(first, "a", 10.0, NOW + 200)  # now only `last` is held there
    assert [x.task_ids for x in d.assign(NOW + 200) if x.duplicate_of] == [(last,)]


# ---- copies' budget, slow nodes, probes ------------------------------------------------------


def test_a_race_the_original_wins_counts_only_what_the_copy_computed() -> None:
    d, late = straggling(cap=0.5)
    (copy,) = d.assign(NOW + 50)
    # While the race runs: what the original is expected to have computed for nothing by
    # the time the copy ends, less than the task's whole 10 units.
    assert 5.0 < d.duplicated_work < 10.0
    d.task_started(late, copy.node, NOW + 50)
    assert d.task_finished(late, "slow", 52.0, NOW + 52) == ["fast"]
    assert d.duplicated_work == pytest.approx(2.0, rel=0.1)  # 2 s at fast's rate of ~1 unit/s


def test_a_node_measured_slow_is_not_pulled_up_toward_the_fleet() -> None:
    book = RateBook()
    for _ in range(5):
        book.observe("fast", 4.0, 1.0)
        book.observe("steady", 4.0, 1.0)
    book.observe("slowed", 4.0, 1.0)
    book.observe("slowed", 0.8, 1.0)  # 5x off: starts again from this sample
    assert book.estimate("slowed") == pytest.approx(0.8)
    book.observe("lucky", 8.0, 1.0)  # one fast sample is still pulled down
    assert book.estimate("lucky") < 8.0


def test_slots_are_compared_by_a_late_finish_not_the_expected_one() -> None:
    task = TaskSpec("t", "j", {}, work=8.0)

    def node_for(risk: float) -> str:
        pools = {
            "fast": SlotPool("fast", 4.0, frozenset(), None, [(NOW + 6.5, 0)]),
            "slow": SlotPool("slow", 1.0, frozenset(), None, [(NOW, 0)]),
        }
        (placed,), _ = list_schedule([Candidate(task, 0, ("fast", "slow"))], pools, 0.0, risk=risk)
        return placed.node

    assert node_for(0.0) == "slow"  # ends at +8, fast at +8.5
    assert node_for(0.6) == "fast"  # but 30% more work would end slow's 4x later than fast's


def test_an_unmeasured_nodes_later_slots_take_no_large_task() -> None:
    d = dispatcher(node("new", cores=2), extra_slots=0)
    high = [
        TaskSpec("small", "high", {"s": MB}, work=2),
        TaskSpec("big", "high", {"b": MB}, work=40),
    ]
    d.add_job(JobSpec("high", priority=5), high, NOW)
    d.add_job(JobSpec("low"), tasks("low", 4, work=2), NOW)
    first, second = d.assign(NOW)
    assert first.task_ids == ("small",)
    assert second.task_ids[0].startswith("low")  # the large one waits for a measured node
    assert d.task_status("big") is TaskStatus.QUEUED


def lagging(**config: object) -> list[Assignment]:
    """Copies made when two tasks on `a` are both 1.5x past their expected time."""
    d = dispatcher(
        node("a", cores=2),
        node("b", cores=2),
        rates={"a": 1.0, "b": 1.0},
        extra_slots=0,
        duplicate_work_cap=1.0,
        chunk_divisor=1000,  # one task per chunk
        **config,
    )
    d.add_job(JobSpec("j"), tasks("j", 4, work=10), NOW)
    for a in d.assign(NOW):
        d.task_started(a.task_ids[0], a.node, NOW)
        if a.node == "b":
            d.task_finished(a.task_ids[0], "b", 10.0, NOW + 10)
    return [a for a in d.assign(NOW + 15) if a.duplicate_of]


def test_a_node_with_several_tasks_late_at_once_has_them_copied_early() -> None:
    assert sorted(a.duplicate_of for a in lagging()) == ["a", "a"]
    assert lagging(lag_factor=2.0) == []  # one late task alone waits for straggler_factor


def test_a_chunk_far_past_its_expected_time_is_stalled_with_everything_it_holds() -> None:
    d = dispatcher(node("n", cores=1), rates={"n": 1.0}, extra_slots=0, stall_min_s=20.0)
    d.add_job(JobSpec("j"), tasks("j", 40, work=5.0), NOW)
    (a,) = d.assign(NOW)
    assert len(a.task_ids) >= 2
    first, second = a.task_ids[0], a.task_ids[1]
    d.task_started(first, "n", NOW)
    d.task_computed(first, "n", 5.0, NOW + 5)  # done, its result not home yet
    d.task_started(second, "n", NOW + 5)
    assert d.stalled(NOW + 20) == []  # 15 s into a 5 s task: within the least time
    assert d.stalled(NOW + 50) == []  # 45 s: not yet 10 times its expected time
    (stall,) = d.stalled(NOW + 60)
    assert (stall.node, stall.task_id) == ("n", second)
    assert set(stall.held) == set(a.task_ids)  # the computed one is lost with the process
    d.task_failed(second, "n", "stalled", NOW + 60)
    for task_id in stall.held:
        if task_id != second:
            d.task_returned(task_id, "n", NOW + 60)
    assert d.stalled(NOW + 200) == []
    assert {d.task_status(t) for t in a.task_ids} == {TaskStatus.QUEUED}


def test_each_attempt_of_a_raced_task_is_stalled_on_its_own() -> None:
    # A hung input hangs its copy too: each attempt is ended once it is stalled, and the
    # task fails once both nodes failed it.
    d, late = straggling(1.0, stall_min_s=1.0, stall_factor=2.0)
    copies = [c for c in d.assign(NOW + 50) if c.duplicate_of]
    assert [c.task_ids for c in copies] == [(late,)]
    d.task_started(late, "fast", NOW + 50)
    (stall,) = d.stalled(NOW + 60)  # the original: 60 s into a 10 s task; the copy: 10 s
    assert (stall.node, stall.task_id, stall.held) == ("slow", late, (late,))
    assert d.task_failed(late, "slow", "stalled", NOW + 60) is TaskStatus.RUNNING
    assert d.stalled(NOW + 65) == []
    d.update_nodes([node("third", cores=1)], NOW + 65)
    assert [c for c in d.assign(NOW + 75) if c.duplicate_of] == []  # it failed once: no copy
    (stall,) = d.stalled(NOW + 80)
    assert (stall.node, stall.task_id) == ("fast", late)
    assert d.task_failed(late, "fast", "stalled", NOW + 80) is TaskStatus.FAILED
    assert set(d.task_failures(late)) == {"slow", "fast"}
