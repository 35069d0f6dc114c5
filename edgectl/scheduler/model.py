"""The scheduler's plain data: what it is told about nodes, jobs and tasks, and what it decides.

Everything here is a dataclass with no behaviour beyond small derived values, so that
the executor, the simulator and the tests build them directly and the CLI can dump them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from edgectl.inventory.model import Node


class TaskStatus(str, Enum):
    """Where a task is, as far as the scheduler is concerned."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobStatus(str, Enum):
    """A job's state in the scheduler, derived from its dependencies and tasks."""

    WAITING = "waiting"  # some `after` job is not done yet
    READY = "ready"  # dependencies met, tasks queued or running
    DONE = "done"
    FAILED = "failed"  # a task failed for good, or a job it depends on failed


@dataclass(frozen=True)
class SchedulerConfig:
    """The knobs of the scheduler; the defaults suit a LAN fleet of small boards."""

    max_fact_age_s: float = 300.0  # facts older than this make a node ineligible
    transfer_s_per_byte: float = 1 / 10e6  # seconds to push one byte to a node (10 MB/s)
    rate_smoothing: float = 0.3  # EWMA weight of the newest rate sample
    # k in guided self-scheduling: chunk = remaining / (k x rate). A chunk is one process;
    # what a node that slows holds up is bounded by this, or by taking tasks back.
    chunk_divisor: float = 3.0
    dispatch_s: float = 0.1  # fixed seconds a chunk costs besides its work (start, fetch)
    max_dispatch_share: float = 0.1  # chunks last at least dispatch_s / this, when work allows
    straggler_factor: float = 2.0  # a task is late past this multiple of its expected time
    # Two tasks of a node past `lag_factor` times their expected time at once: the node
    # slowed. It is planned `lag_slowdown` times slower than its worst overrun, and its
    # tasks past their expected time are late (a copy may race them).
    lag_factor: float = 1.3
    lag_slowdown: float = 2.0
    finish_risk: float = 0.6  # slots compared by start + (1 + this) x expected compute
    probe_largest: float = 2.0  # an unmeasured node's later probes: work <= this x quartile
    # Favour (see Assignment.favoured) a task sent alone that would take longer on the
    # fastest slot it may use than its job's work spread over all the slots it may use.
    favour_long: bool = True
    # Hold a slot for such a task of a job about to be released (the jobs it comes after
    # have nothing left queued), from when that job should be; until then the slot takes
    # only queued work that should end by then.
    hold_for_long: bool = True
    # Speculative copies, as a share of all work, by the scheduler's own count of what races
    # waste. That count comes from estimated work and learned rates, and prices a losing
    # attempt at its node's last rate: on simulated seeds 0-599 it fell up to 2.4 points
    # short of the truth where a node slowed mid-race (seed 574: 3.45% counted, 5.89%
    # real), and at a cap of 9% seed 543 really copied 10.4%. At 8.5% none of those seeds
    # copies more than 9.7%.
    duplicate_work_cap: float = 0.085
    early_copy_share: float = 0.25  # of the cap, for copies before the tail (grows as work ends)
    duplicate_gain: float = 0.25  # a copy must be expected to finish this share sooner
    tail_margin: float = 0.25  # a straggler ending this much after all else is the tail
    duplicates: bool = True  # speculative copies at the tail
    # A chunk runs as one process: a copy may race only a chunk down to the one task it
    # computes (dispatched alone, or the rest given back or home), so that killing the
    # loser kills nothing else.
    copy_single_task_chunks_only: bool = True
    # Ask running chunks to give back tasks they have not started (`Dispatcher.take_back`)
    # when they would end well after the fleet could finish the work left: the node
    # slowed, or the chunk was cut too long for the tail.
    give_back: bool = True
    give_back_margin: float = 0.25  # "well after": by this share of the fleet's time left
    # A chunk whose current task runs this many times longer than expected (and at least
    # stall_min_s) with no copy racing it is stalled (a hung process, a dead mount): it is
    # ended, its current task counts as failed on that node, the rest go back to the queue.
    stall_factor: float = 10.0
    stall_min_s: float = 60.0
    report_delay_s: float = 0.0  # events reach us this late (a poll interval): not lateness
    exclude_after_failures: int = 3  # consecutive task failures that exclude a node
    # Slots beyond free cores, so that uploads overlap computing: a chunk in one waits on
    # the node, at its gate, until a core is free (a favoured one passes at once, unless a
    # task of a higher-priority job is there).
    extra_slots: int = 2
    # The second extra slot only while at least this share of all work is queued: in the
    # tail a chunk waiting at a gate holds tasks that another node could start at once.
    prefetch_share: float = 0.25
    min_free_share: float = 0.1  # floor of a node's free share of its cores in the prior


@dataclass
class NodeState:
    """A node as the scheduler sees it: the last probe's facts plus where data already is."""

    name: str
    cores: int | None = None
    load1: float | None = None
    mem_available: int | None = None
    disk_free: int | None = None
    langs: frozenset[str] = frozenset()
    labels: dict[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    reachable: bool = True
    probed_at: float | None = None
    has_inputs: frozenset[str] = frozenset()
    facts: Mapping[str, Any] = field(default_factory=dict)  # raw facts, for selectors
    node: Node | None = None  # the inventory record, for selectors on host, user, port

    @classmethod
    def from_records(
        cls, node: Node, latest: Mapping[str, Any], has_inputs: frozenset[str] = frozenset()
    ) -> NodeState:
        """Build from an inventory node and its `FactsStore.latest()` record."""
        facts: Mapping[str, Any] = latest.get("facts") or {}
        langs = (facts.get("tesseract_langs") or []) if facts.get("tesseract") else []
        return cls(
            name=node.name,
            cores=facts.get("cores"),
            load1=facts.get("load1"),
            mem_available=facts.get("mem_available"),
            disk_free=facts.get("disk_free"),
            langs=frozenset(langs),
            labels=dict(node.labels),
            groups=tuple(node.groups),
            reachable=bool(latest.get("reachable")),
            probed_at=latest.get("probed_at"),
            has_inputs=has_inputs,
            facts=facts,
            node=node,
        )


@dataclass(frozen=True)
class JobSpec:
    """A job as the scheduler needs it: priority, dependencies and where it may run."""

    id: str
    priority: int = 0
    after: tuple[str, ...] = ()
    selector: str = "all"
    requires_langs: tuple[str, ...] = ()
    mem_per_task: int = 0  # bytes of available memory a task needs
    # The job kind's own test of a node's facts (say, tesseract with the job's languages):
    # a pure function returning why the node cannot run the job, or None.
    capability: Callable[[Mapping[str, Any]], str | None] | None = field(
        default=None, compare=False
    )


@dataclass(frozen=True)
class TaskSpec:
    """One schedulable piece of a job: its inputs (id -> bytes) and its estimated work."""

    id: str
    job_id: str
    inputs: Mapping[str, int] = field(default_factory=dict)
    work: float = 1.0  # in the unit rates are learned in, e.g. pages or megapixels
    output_bytes: int = 0  # expected size of what it writes on the node
    requires_langs: tuple[str, ...] = ()  # on top of the job's
    priority: int | None = None  # None: the job's
    only_on: str | None = None  # its data exists on this node only (not a saving: a must)

    @property
    def input_bytes(self) -> int:
        """Total size of the inputs."""
        return sum(self.inputs.values())


@dataclass(frozen=True)
class Assignment:
    """Run these tasks, in order, in one free slot of `node`."""

    node: str
    task_ids: tuple[str, ...]
    # A speculative copy: one task, racing the attempt running on this node; the first
    # result wins and `task_finished` names the attempts to cancel.
    duplicate_of: str | None = None
    # Run ahead of the node's other tasks (at a higher CPU priority): the task alone would
    # take longer than its whole job spread over the fleet, so the job ends with it.
    favoured: bool = False


@dataclass(frozen=True)
class Stall:
    """A chunk on `node` that stopped getting anywhere: end it and place its tasks again."""

    node: str
    task_id: str  # the task it was computing: counted as failed there
    held: tuple[str, ...]  # every task the chunk's process holds (its computed ones too)
    elapsed_s: float


@dataclass(frozen=True)
class TakeBack:
    """Claim back these tasks of the chunk running on `node`, if it has not started them."""

    # One exec on the node claims each task's input the way the node's runner does before
    # starting it; the tasks whose claim the controller won go back to the queue
    # (`Dispatcher.taken_back`), the others run on in their chunk.
    node: str
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class PlannedTask:
    """Where and when the plan would run one task (times in seconds from `now`)."""

    task_id: str
    job_id: str
    node: str
    start_s: float
    finish_s: float
    transfer_s: float


@dataclass
class Plan:
    """A dry run: every queued task placed on a node, and the predicted makespan."""

    now: float
    placements: list[PlannedTask]
    unplaceable: dict[str, str]  # task id -> why no node can take it
    makespan_s: float  # from now until the last running or planned task ends


@dataclass
class NodeExplanation:
    """Why a node was chosen or rejected, with the parts of its score."""

    # The parts are wall-clock seconds for the node's planned share spread over its slots:
    # wait (work already running there / rate), transfer (inputs not yet on it), compute
    # (planned work / rate); their sum is about the node's predicted finish.

    node: str
    eligible: bool
    verdict: str
    reasons: list[str]
    slots: int = 0
    free_slots: int = 0
    rate: float = 0.0  # work units per second per slot
    rate_source: str = ""  # "observed" or "prior"
    wait_s: float = 0.0
    transfer_s: float = 0.0
    compute_s: float = 0.0
    finish_s: float = 0.0
    tasks: int = 0
    local_inputs: int = 0


@dataclass
class JobExplanation:
    """A job's state and counts, and what it waits for."""

    id: str
    status: str
    priority: int
    queued: int
    running: int
    done: int
    failed: int
    waiting_for: list[str]
    reasons: list[str]


@dataclass
class Explanation:
    """The answer to `explain`: per node and per job, plus the predicted makespan."""

    now: float
    makespan_s: float
    nodes: list[NodeExplanation]
    jobs: list[JobExplanation]
    unplaceable: dict[str, str]
