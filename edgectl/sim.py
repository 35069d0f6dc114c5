"""A seeded discrete-event simulation of a fleet, driving the real scheduler.

The fleet: nodes of 1x, 2x and 4x per-core speed, background load switching on and off
(our tasks run niced, so background work keeps its cores and ours share the rest; a
favoured task, niced less than the others, takes a whole free core first), one
node slowing 5x mid-run, one node dropping out mid-run (noticed at the next probe, its
tasks then re-placed), lognormal task costs whose estimates come from input sizes (so
they are off by ~30%), some inputs already on nodes, a per-byte transfer cost and a
fixed cost per dispatched chunk; both keep a slot busy without computing. As on a real
node, a chunk set up waits at its node's gate until fewer of the node's other runs compute
than it has cores free of background load (rounded up); it then keeps its core from task
to task. Waiting runs of a higher-priority job go first; a favoured run passes at once
unless a run of a higher-priority job is on the node. Probes every
few simulated seconds report load (background plus our running tasks) as `load1`, as a
real probe would. The jobs: a bulk one, an urgent one (higher priority), and a German
one after the urgent one (only nodes with `deu` may run it).

The lower bound on the makespan is the latest of these, for all the work and for each
chain of `after` jobs (a job cannot start before the jobs it comes after could end):
- capacity: the first time at which the cumulative capacity of the nodes the work may
  use reaches its total, a node's capacity at time t being speed x (cores - background
  load), a fifth of that while slowed and zero once dropped (the schedule of those
  changes is known here, not to the scheduler);
- the longest task alone on the fastest core it may use.
Transfers, dispatch costs and work lost on the dropped node are outside the bound, so
they show up in makespan / bound; no schedule can beat it.

As in the job engine, a chunk runs as one process that takes its tasks one after
another, claiming each before starting it. The scheduler may take back the tasks of a
running chunk: its claims reach the node one dispatch cost (`dispatch_s`, one exec on the
node) after it asked, and only the tasks not started by then come back to the queue; a
node that has dropped out answers nothing and gives nothing back (its work is re-placed
once a probe finds it gone). A speculative copy may race a chunk's task only when the
chunk holds nothing else (dispatched alone, or the rest given back or done), so that
killing the loser kills no other task. The scheduler learns only what a real controller
would: probe facts, and when each task started and finished.

Besides edgectl (with and without copies) and two naive policies, a clairvoyant list
scheduler runs as a reference: it knows the true work of each task and the schedule of
every node's changes, which no controller can (see `Clairvoyant`).

Duplicated work is the work computed twice: what attempts that lost a race to a copy
(or whose copy lost) had computed when they were cancelled, over the total work.

Where the capacity went: the capacity the fleet had until the makespan (speed x free
cores, summed over time) is the work itself plus these losses, each given as a share of
it (`SimResult.losses`): cores idle while a chunk's inputs were pushed (`pushing`), idle
with tasks waiting in the controller's queue (`queued`: the policy left them so), idle
with nothing left to place (`tail`), work computed and thrown away by copies and stalls
(`raced`) and work lost with a node that dropped out (`dropped`).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from edgectl.scheduler import (
    Assignment,
    Dispatcher,
    JobSpec,
    NodeState,
    SchedulerConfig,
    Stall,
    TakeBack,
    TaskSpec,
)
from edgectl.scheduler.baselines import RoundRobin, StaticSplit
from edgectl.scheduler.rates import gate_size

POLICIES = ("edgectl", "edgectl-nodup", "round-robin", "static-split", "clairvoyant")
BYTES_PER_WORK = 100_000  # input bytes per unit of work: estimates come from input sizes
_EPS = 1e-9


@dataclass(frozen=True)
class SimNode:
    """A simulated node and the schedule of what happens to it."""

    name: str
    cores: int
    speed: float  # work units per second of one core
    langs: frozenset[str]
    background: tuple[tuple[float, float], ...] = ()  # (from time, cores busy) steps
    slow_at: float | None = None
    drop_at: float | None = None

    def background_at(self, t: float) -> float:
        """Cores busy with other work at time t."""
        busy = 0.0
        for start, cores in self.background:
            if start > t:
                break
            busy = cores
        return busy

    def speed_at(self, t: float, slow_factor: float) -> float:
        """Per-core speed at time t (zero once dropped)."""
        if self.drop_at is not None and t >= self.drop_at:
            return 0.0
        slowed = self.slow_at is not None and t >= self.slow_at
        return self.speed / slow_factor if slowed else self.speed


@dataclass(frozen=True)
class Scenario:
    """Everything one simulated run needs; built from a seed by `make_scenario`."""

    seed: int
    nodes: tuple[SimNode, ...]
    jobs: tuple[JobSpec, ...]
    tasks: tuple[TaskSpec, ...]
    costs: dict[str, float]  # task id -> true work (the spec's `work` is only an estimate)
    has_inputs: dict[str, frozenset[str]]
    s_per_byte: float = 1 / 5e6
    dispatch_s: float = 0.5
    probe_every_s: float = 10.0
    slow_factor: float = 5.0


@dataclass(frozen=True)
class SimResult:
    """The outcome of one policy on one scenario."""

    policy: str
    seed: int
    makespan: float
    lower_bound: float
    duplicated_work: float  # work computed twice (by attempts that lost a race) / total work
    tasks: int
    nodes: int
    capacity: float = 0.0  # speed x free cores, summed until the makespan
    losses: dict[str, float] = field(default_factory=dict)  # share of capacity, by cause

    @property
    def ratio(self) -> float:
        """Makespan over the lower bound (1.0 would be perfect)."""
        return self.makespan / self.lower_bound


class Policy(Protocol):
    """What the simulation drives: the dispatcher's event interface. A policy that subclasses
    it inherits these bodies: it learns nothing, places nothing, and takes nothing back."""

    def update_nodes(self, nodes: Sequence[NodeState], now: float) -> None:
        """Facts from a probe round."""
        return None

    def add_job(self, job: JobSpec, tasks: Sequence[TaskSpec], now: float) -> None:
        """A job to run."""
        return None

    def assign(self, now: float) -> list[Assignment]:
        """Work for free slots."""
        return []

    def take_back(self, now: float) -> list[TakeBack]:
        """Tasks to claim back from running chunks."""
        return []

    def taken_back(self, request: TakeBack, returned: Iterable[str], now: float) -> list[str]:
        """The answer to a take-back: the tasks that came back unstarted."""
        return []

    def task_started(self, task_id: str, node: str, now: float) -> None:
        """A task began computing."""
        return None

    def task_finished(
        self, task_id: str, node: str, seconds: float, now: float, work: float | None = None
    ) -> list[str]:
        """A task ended well; the nodes whose attempts of it to cancel."""
        return []

    def node_lost(self, node: str, now: float) -> list[str]:
        """A node is gone; the tasks put back in the queue."""
        return []


def make_scenario(seed: int) -> Scenario:
    """A random fleet and job mix: 6-12 nodes, 200-600 tasks, the perturbations above."""
    rng = random.Random(seed)
    count = rng.randint(6, 12)
    speeds = [1.0, 2.0, 4.0] + [rng.choice([1.0, 2.0, 4.0]) for _ in range(count - 3)]
    rng.shuffle(speeds)
    cores = [rng.choice([2, 4, 4, 8]) for _ in range(count)]
    german = set(rng.sample(range(count), max(3, round(0.75 * count))))
    n_tasks = rng.randint(200, 600)
    costs = [rng.lognormvariate(math.log(40), 0.7) for _ in range(n_tasks)]
    capacity = sum(s * c for s, c in zip(speeds, cores, strict=True))
    horizon = sum(costs) / capacity  # a rough makespan, to place the perturbations
    slow, drop = rng.sample(range(count), 2)
    nodes = []
    for i in range(count):
        steps: list[tuple[float, float]] = []
        if rng.random() < 0.4:
            t, on = rng.uniform(0, 0.5) * horizon, True
            while t < 3 * horizon:
                steps.append((t, cores[i] * rng.uniform(0.25, 0.6) if on else 0.0))
                t, on = t + rng.uniform(0.1, 0.4) * horizon, not on
        nodes.append(
            SimNode(
                name=f"node{i:02d}",
                cores=cores[i],
                speed=speeds[i],
                langs=frozenset({"eng", "deu"} if i in german else {"eng"}),
                background=tuple(steps),
                slow_at=rng.uniform(0.25, 0.6) * horizon if i == slow else None,
                drop_at=rng.uniform(0.3, 0.7) * horizon if i == drop else None,
            )
        )
    jobs = (
        JobSpec("scan", priority=0),
        JobSpec("urgent", priority=5),
        JobSpec("german", priority=0, after=("urgent",), requires_langs=("deu",)),
    )
    tasks, truth = [], {}
    local: dict[str, set[str]] = {node.name: set() for node in nodes}
    for i, cost in enumerate(costs):
        job = jobs[0] if i < 0.6 * n_tasks else jobs[1] if i < 0.85 * n_tasks else jobs[2]
        size = int(cost * BYTES_PER_WORK * rng.lognormvariate(0, 0.3))
        task = TaskSpec(f"t{i:04d}", job.id, {f"in{i:04d}": size}, work=size / BYTES_PER_WORK)
        tasks.append(task)
        truth[task.id] = cost
        if rng.random() < 0.3:
            local[rng.choice(nodes).name].add(f"in{i:04d}")
    has_inputs = {name: frozenset(found) for name, found in local.items()}
    return Scenario(seed, tuple(nodes), jobs, tuple(tasks), truth, has_inputs)


def lower_bound(scenario: Scenario) -> float:
    """No schedule ends sooner: the bound over all work, and over each chain of `after` jobs."""
    ends: dict[str, float] = {}

    def earliest_end(job: JobSpec) -> float:
        """The earliest a job could end, after the jobs it comes after."""
        if job.id not in ends:
            start = max((earliest_end(j) for j in scenario.jobs if j.id in job.after), default=0)
            ends[job.id] = _bound(scenario, job, start)
        return ends[job.id]

    every = _bound(scenario, None, 0.0)
    return max([every, *(earliest_end(job) for job in scenario.jobs)])


def _bound(scenario: Scenario, job: JobSpec | None, start: float) -> float:
    """The earliest the work of one job (None: all jobs) could end, started at `start`."""
    # On the nodes it may use: its capacity bound, or its longest task alone on the
    # fastest core, whichever is later.
    langs = set(job.requires_langs) if job else set()
    nodes = [n for n in scenario.nodes if langs <= n.langs]
    costs = [scenario.costs[t.id] for t in scenario.tasks if job is None or t.job_id == job.id]
    if not costs:
        return start
    factor = scenario.slow_factor
    changes = {start}
    for node in nodes:
        changes.update(t for t, _ in node.background if t > start)
        changes.update(t for t in (node.slow_at, node.drop_at) if t is not None and t > start)
    times = sorted(changes)
    left = sum(costs)
    for index, begin in enumerate(times):
        rate = sum(
            n.speed_at(begin, factor) * max(0.0, n.cores - n.background_at(begin)) for n in nodes
        )
        end = times[index + 1] if index + 1 < len(times) else math.inf
        if rate > 0 and left <= rate * (end - begin):
            capacity = begin + left / rate
            break
        left -= rate * (end - begin)
    else:
        return math.inf  # no capacity left: the job cannot end
    fastest = max(n.speed for n in nodes if n.drop_at is None or n.drop_at > start)
    return max(capacity, start + max(costs) / fastest)


@dataclass
class _Run:
    """A chunk in one slot: set-up (dispatch + transfer) then its tasks one by one."""

    node: str
    tasks: list[str]
    setup_left: float  # seconds
    work_left: float = 0.0  # of the current task
    started: float = 0.0
    favoured: bool = False  # at a higher CPU priority than the node's other runs
    waiting: bool = False  # set up, waiting at the node's gate for a core
    gated: bool = False  # has passed the gate: it keeps its core from task to task

    @property
    def computing(self) -> bool:
        """Whether the run computes its current task (set up, and past the gate)."""
        return self.setup_left <= 0 and not self.waiting


@dataclass
class _Fleet:
    """The simulated world while a run goes on."""

    scenario: Scenario
    policy: Policy
    runs: list[_Run] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    wasted_work: float = 0.0  # computed by attempts that lost to a copy
    specs: dict[str, TaskSpec] = field(default_factory=dict)
    priorities: dict[str, int] = field(default_factory=dict)  # job id -> priority
    claims: list[tuple[float, TakeBack]] = field(default_factory=list)  # (answered at, asked)
    dropped_work: float = 0.0  # computed on nodes that dropped out, by tasks not finished
    nodes: dict[str, SimNode] = field(default_factory=dict)
    capacity: float = 0.0  # speed x free cores, summed over time
    idle: dict[str, float] = field(default_factory=dict)  # capacity left idle, by cause

    def __post_init__(self) -> None:
        self.specs = {spec.id: spec for spec in self.scenario.tasks}
        self.priorities = {job.id: job.priority for job in self.scenario.jobs}
        self.nodes = {node.name: node for node in self.scenario.nodes}
        self.idle = dict.fromkeys(("pushing", "queued", "tail"), 0.0)

    def by_node(self) -> dict[str, list[_Run]]:
        """The runs, grouped by node."""
        grouped: dict[str, list[_Run]] = {}
        for run in self.runs:
            grouped.setdefault(run.node, []).append(run)
        return grouped

    def account(self, speeds: dict[int, float], t: float, step: float) -> None:
        """Add a step's capacity, and why the part of it that computed nothing was idle."""
        by_node = self.by_node()
        queued: bool | None = None  # whether a task of a released job waits; asked lazily
        for node in self.scenario.nodes:
            speed = node.speed_at(t, self.scenario.slow_factor)
            if speed <= 0:
                continue
            free = max(0.0, node.cores - node.background_at(t))
            runs = by_node.get(node.name, [])
            used = sum(speeds[id(r)] for r in runs if r.computing)
            self.capacity += speed * free * step
            idle_cores = max(0.0, free - used / speed)
            if idle_cores <= _EPS:
                continue
            pushing = min(idle_cores, sum(1 for r in runs if r.setup_left > 0))
            self.idle["pushing"] += speed * pushing * step
            if idle_cores - pushing > _EPS:
                if queued is None:
                    queued = self.any_queued()
                self.idle["queued" if queued else "tail"] += speed * (idle_cores - pushing) * step

    def any_queued(self) -> bool:
        """Whether a task of a released job is neither done nor on any node."""
        held = {task_id for run in self.runs for task_id in run.tasks}
        released = {
            job.id
            for job in self.scenario.jobs
            if all(spec.id in self.done for spec in self.scenario.tasks if spec.job_id in job.after)
        }
        return any(
            spec.job_id in released and spec.id not in self.done and spec.id not in held
            for spec in self.scenario.tasks
        )

    def computing(self, node: str) -> int:
        """Runs computing (not pushing inputs) on a node."""
        return sum(1 for r in self.runs if r.node == node and r.computing)

    def speeds(self, t: float) -> dict[int, float]:
        """Per run (by id): its speed. Computing runs are niced below the background load;
        favoured ones come first (a whole free core each, while there are enough) and the
        others share the free cores left. A run still setting up has its node's speed
        (zero once dropped: its push stops too)."""
        by_node = self.by_node()
        found: dict[int, float] = {}
        for node in self.scenario.nodes:
            runs = by_node.get(node.name, [])
            speed = node.speed_at(t, self.scenario.slow_factor)
            computing = [r for r in runs if r.computing]
            favoured = sum(1 for r in computing if r.favoured)
            free = max(0.0, node.cores - node.background_at(t))
            first = min(1.0, free / favoured) if favoured else 0.0
            rest = len(computing) - favoured
            share = min(1.0, (free - first * favoured) / rest) if rest else 1.0
            for run in runs:
                if run.waiting:
                    found[id(run)] = 0.0
                elif run.setup_left > 0:
                    found[id(run)] = speed
                else:
                    found[id(run)] = speed * (first if run.favoured else share)
        return found

    def probe(self, t: float) -> list[NodeState]:
        """What a probe round reports at time t."""
        return [
            NodeState(
                name=n.name,
                cores=n.cores,
                load1=n.background_at(t) + self.computing(n.name),
                mem_available=2 * 10**9,
                disk_free=50 * 10**9,
                langs=n.langs,
                reachable=n.drop_at is None or t < n.drop_at,
                probed_at=t,
                has_inputs=self.scenario.has_inputs[n.name],
            )
            for n in self.scenario.nodes
        ]

    def start(self, assignment: Assignment, t: float) -> None:
        """A chunk starts: dispatch and push first, then its tasks."""
        local = self.scenario.has_inputs[assignment.node]
        pushed = sum(
            size
            for task_id in assignment.task_ids
            for name, size in self.specs[task_id].inputs.items()
            if name not in local
        )
        setup = self.scenario.dispatch_s + pushed * self.scenario.s_per_byte
        run = _Run(assignment.node, list(assignment.task_ids), setup, favoured=assignment.favoured)
        self.runs.append(run)
        if setup <= 0:
            self.begin(run, t)

    def begin(self, run: _Run, t: float) -> None:
        """Start computing the run's next task, or end the run; a run just set up waits at
        the gate while its node's cores are taken. A favoured one passes at once, unless a
        run of a higher-priority job computes or waits there."""
        while run.tasks and run.tasks[0] in self.done:
            run.tasks.pop(0)
        if not run.tasks:
            self.runs.remove(run)
            return
        passes = run.favoured and not self.outranked(run)
        if not run.gated and not passes and self.gate_full(run, t):
            run.waiting = True
            return
        run.waiting, run.gated = False, True
        run.work_left, run.started = self.scenario.costs[run.tasks[0]], t
        self.policy.task_started(run.tasks[0], run.node, t)

    def priority(self, run: _Run) -> int:
        """The priority of the job the run's current task belongs to."""
        return self.priorities[self.specs[run.tasks[0]].job_id]

    def outranked(self, run: _Run) -> bool:
        """Whether a run of a higher-priority job computes or waits on the run's node."""
        mine = self.priority(run)
        return any(
            r.node == run.node
            and r.tasks
            and (r.computing or r.waiting)
            and self.priority(r) > mine
            for r in self.runs
            if r is not run
        )

    def gate_full(self, run: _Run, t: float) -> bool:
        """Whether the node's gate has no core for the run: as many others compute as the
        node has cores free of background load (rounded up)."""
        node = self.nodes[run.node]
        cores = gate_size(node.cores, node.background_at(t))
        others = sum(
            1
            for r in self.runs
            if r.node == run.node and r is not run and r.computing and not r.favoured
        )
        return others >= cores

    def admit(self, t: float) -> None:
        """Runs waiting at a gate with a core free now start: the highest priority first,
        then in the order they arrived."""
        waiting = sorted((r for r in self.runs if r.waiting), key=lambda r: -self.priority(r))
        for run in waiting:
            if run in self.runs and not self.gate_full(run, t):
                run.gated = True
                self.begin(run, t)

    def claim(self, request: TakeBack, t: float) -> list[str]:
        """The controller's claims reach the node at t: the tasks not started by then come back."""
        node = next(n for n in self.scenario.nodes if n.name == request.node)
        if node.drop_at is not None and t >= node.drop_at:
            return []  # the exec fails: nothing is claimed
        returned = []
        for run in [r for r in self.runs if r.node == request.node]:
            started = run.tasks[0] if run.computing and run.tasks else None
            for task_id in request.task_ids:
                if task_id in run.tasks and task_id != started:
                    run.tasks.remove(task_id)
                    returned.append(task_id)
            if not run.tasks:
                self.runs.remove(run)
        return returned

    def end_stall(self, stall: Stall, dispatcher: Dispatcher, t: float) -> None:
        """The controller ends a stalled chunk: what it computed of its task is lost."""
        for run in [r for r in self.runs if r.node == stall.node and stall.task_id in r.tasks]:
            if run.tasks[0] == stall.task_id and run.computing:
                self.wasted_work += self.scenario.costs[stall.task_id] - run.work_left
            self.runs.remove(run)
            for task_id in run.tasks:
                if task_id == stall.task_id:
                    dispatcher.task_failed(task_id, stall.node, "stalled", t)
                else:
                    dispatcher.task_returned(task_id, stall.node, t)

    def cancel(self, task_id: str, node: str, t: float) -> None:
        """Drop a task from a node's run: a copy of it won elsewhere."""
        for run in list(self.runs):
            if run.node == node and task_id in run.tasks:
                current = run.tasks[0] == task_id and run.computing
                run.tasks.remove(task_id)
                if current:
                    self.wasted_work += self.scenario.costs[task_id] - run.work_left
                    self.begin(run, t)
                elif not run.tasks:
                    self.runs.remove(run)


class Clairvoyant(Policy):
    """A reference to measure against, not a scheduler: it knows what no controller can.

    It knows each task's true work, and when each node will slow down, drop out and carry
    background load. At each decision it plans every queued task of a released job, the
    highest priority first and then the largest, on the gate slot where it would end first
    given its node's future speed (so never on a node that drops out before the task would
    end), and dispatches the tasks planned to start now, one per chunk, up to one chunk
    more per node than its gate lets compute (that one pushes its inputs meanwhile). It
    needs no copies and takes nothing back (the protocol's defaults), and learns nothing
    from probes. Its makespan over the bound shows how much of a scheduler's gap is the
    price of not knowing the future.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.specs = {spec.id: spec for spec in scenario.tasks}
        self.jobs = {job.id: job for job in scenario.jobs}
        self.left = {
            job.id: {t.id for t in scenario.tasks if t.job_id == job.id} for job in scenario.jobs
        }
        self.queued = set(self.specs)
        self.ends: dict[str, dict[str, float]] = {node.name: {} for node in scenario.nodes}
        self.lost: set[str] = set()
        # Per node, the times its speed or background load changes, and from each of them
        # the rate of a run past its gate.
        self.changes: dict[str, list[float]] = {}
        self.rates: dict[str, list[float]] = {}
        for node in scenario.nodes:
            times = sorted(
                {0.0, *(t for t, _ in node.background)}
                | {t for t in (node.slow_at, node.drop_at) if t is not None}
            )
            self.changes[node.name] = times
            self.rates[node.name] = [self._rate(node, t) for t in times]
        # Per node and task, seconds to dispatch the task there and push the inputs it lacks.
        self.setup = {
            (node, spec.id): scenario.dispatch_s
            + scenario.s_per_byte
            * sum(size for name, size in spec.inputs.items() if name not in held)
            for node, held in scenario.has_inputs.items()
            for spec in scenario.tasks
        }

    def task_finished(
        self, task_id: str, node: str, seconds: float, now: float, work: float | None = None
    ) -> list[str]:
        """Note the task done: a job after its job may be released."""
        self.ends[node].pop(task_id, None)
        self.left[self.specs[task_id].job_id].discard(task_id)
        return []

    def node_lost(self, node: str, now: float) -> list[str]:
        """Queue again what was on the node (it plans nothing there that the drop would cut)."""
        self.lost.add(node)
        back = sorted(self.ends[node])
        self.ends[node] = {}
        self.queued.update(back)
        return back

    def assign(self, now: float) -> list[Assignment]:
        """The tasks planned to start now on nodes with room for one more chunk."""
        up = [
            node
            for node in self.scenario.nodes
            if node.name not in self.lost and (node.drop_at is None or now < node.drop_at)
        ]
        room, slots = {}, {}
        for node in up:
            gate = gate_size(node.cores, node.background_at(now))
            ends = sorted(max(now, end) for end in self.ends[node.name].values())
            room[node.name] = gate + 1 - len(ends)
            # With more chunks than gate slots, a slot frees only as the latest ones end.
            slots[node.name] = ends[len(ends) - gate :] + [now] * max(0, gate - len(ends))
            heapq.heapify(slots[node.name])
        if not any(count > 0 for count in room.values()):
            return []
        released = {
            job.id for job in self.scenario.jobs if all(not self.left[a] for a in job.after)
        }
        order = sorted(
            (t for t in self.queued if self.specs[t].job_id in released),
            key=lambda t: (-self.jobs[self.specs[t].job_id].priority, -self.scenario.costs[t], t),
        )
        out = []
        for task_id in order:
            langs = set(self.jobs[self.specs[task_id].job_id].requires_langs)
            best: tuple[float, float, SimNode] | None = None
            for node in up:
                if langs <= node.langs:
                    free_at = slots[node.name][0]
                    start = max(free_at, now + self.setup[node.name, task_id])
                    end = self._finish(node, start, self.scenario.costs[task_id])
                    if best is None or end < best[0]:
                        best = (end, free_at, node)
            if best is None or best[0] == math.inf:
                continue
            end, free_at, node = best
            heapq.heapreplace(slots[node.name], end)
            if room[node.name] > 0 and free_at <= now + self.setup[node.name, task_id]:
                room[node.name] -= 1
                self.ends[node.name][task_id] = end
                self.queued.discard(task_id)
                out.append(Assignment(node.name, (task_id,)))
                if not any(count > 0 for count in room.values()):
                    break
        return out

    def _rate(self, node: SimNode, t: float) -> float:
        """Work per second of a run past the node's gate at time t."""
        # With the gate full, the cores background load leaves free are shared by as many
        # runs as the gate lets compute (those free cores, rounded up).
        free = max(0.0, node.cores - node.background_at(t))
        share = min(1.0, free / gate_size(node.cores, node.background_at(t)))
        return node.speed_at(t, self.scenario.slow_factor) * share

    def _finish(self, node: SimNode, start: float, work: float) -> float:
        """When a run past the node's gate from `start` computes `work` (inf: it never does)."""
        times, rates = self.changes[node.name], self.rates[node.name]
        index = bisect.bisect_right(times, start) - 1
        t, left = start, work
        while True:
            rate = rates[index]
            end = times[index + 1] if index + 1 < len(times) else math.inf
            if rate > 0 and left <= rate * (end - t):
                return t + left / rate
            if end == math.inf:
                return math.inf
            left -= rate * (end - t)
            t, index = end, index + 1


def make_policy(name: str, scenario: Scenario, **settings: Any) -> Policy:
    """One of POLICIES, ready to be driven; `settings` override edgectl's SchedulerConfig."""
    if name in ("edgectl", "edgectl-nodup"):
        config = SchedulerConfig(
            max_fact_age_s=6 * scenario.probe_every_s,
            transfer_s_per_byte=scenario.s_per_byte,
            dispatch_s=scenario.dispatch_s,
            duplicates=name == "edgectl",
        )
        config = replace(config, **settings)
        return Dispatcher(config)
    if name == "round-robin":
        return RoundRobin()
    if name == "static-split":
        return StaticSplit()
    if name == "clairvoyant":
        return Clairvoyant(scenario)
    raise ValueError(f"unknown policy {name!r}; use one of {', '.join(POLICIES)}")


def simulate(scenario: Scenario, policy_name: str, **settings: Any) -> SimResult:
    """Run every job of the scenario to completion under one policy (see `make_policy`)."""
    policy = make_policy(policy_name, scenario, **settings)
    fleet = _Fleet(scenario, policy)
    t, next_probe = 0.0, scenario.probe_every_s
    policy.update_nodes(fleet.probe(t), t)
    for job in scenario.jobs:
        policy.add_job(job, [s for s in scenario.tasks if s.job_id == job.id], t)
    limit = 100 * lower_bound(scenario)
    while len(fleet.done) < len(scenario.tasks):
        for request in policy.take_back(t):
            fleet.claims.append((t + scenario.dispatch_s, request))
        if isinstance(policy, Dispatcher):  # the same rule as the job engine's
            for stall in policy.stalled(t):
                fleet.end_stall(stall, policy, t)
        fleet.admit(t)
        for assignment in policy.assign(t):
            fleet.start(assignment, t)
        speeds = fleet.speeds(t)
        step = min([next_probe, *(due for due, _ in fleet.claims)]) - t
        for node in scenario.nodes:
            for start, _ in node.background:
                if start > t:
                    step = min(step, start - t)
                    break
            for when in (node.slow_at, node.drop_at):
                if when is not None and when > t:
                    step = min(step, when - t)
        for run in fleet.runs:
            speed = speeds[id(run)]
            if run.node in fleet.lost or speed <= 0:
                continue
            step = min(step, run.setup_left if run.setup_left > 0 else run.work_left / speed)
        before, t = t, t + max(step, 0.0)
        if t > limit:
            raise RuntimeError(f"{policy_name} did not finish seed {scenario.seed}")
        # At the step's start itself: t - step may fall a rounding error before it, on the
        # other side of a change of background load.
        fleet.account(speeds, before, max(step, 0.0))
        _advance(fleet, speeds, step, t)
        answered = [c for c in fleet.claims if c[0] <= t + _EPS]
        fleet.claims = [c for c in fleet.claims if c[0] > t + _EPS]
        for _, request in answered:
            policy.taken_back(request, fleet.claim(request, t), t)
        if t >= next_probe - _EPS:
            next_probe = t + scenario.probe_every_s
            policy.update_nodes(fleet.probe(t), t)
            for node in scenario.nodes:
                if node.drop_at is not None and t >= node.drop_at and node.name not in fleet.lost:
                    fleet.lost.add(node.name)
                    for run in [r for r in fleet.runs if r.node == node.name]:
                        if run.computing and run.tasks:
                            fleet.dropped_work += scenario.costs[run.tasks[0]] - run.work_left
                        fleet.runs.remove(run)
                    policy.node_lost(node.name, t)
    total = sum(scenario.costs.values())
    thrown = {"raced": fleet.wasted_work, "dropped": fleet.dropped_work}
    losses = {
        cause: amount / fleet.capacity if fleet.capacity > 0 else 0.0
        for cause, amount in {**fleet.idle, **thrown}.items()
    }
    return SimResult(
        policy_name,
        scenario.seed,
        t,
        lower_bound(scenario),
        fleet.wasted_work / total,
        len(scenario.tasks),
        len(scenario.nodes),
        fleet.capacity,
        losses,
    )


def _advance(fleet: _Fleet, speeds: dict[int, float], step: float, t: float) -> None:
    """Move every run forward by `step` seconds; handle what completes at `t`."""
    set_up, computed = [], []
    for run in fleet.runs:
        speed = speeds[id(run)]
        if speed <= 0:
            continue  # a dropped node (or no core left for it): nothing moves
        if run.setup_left > 0:
            run.setup_left -= step
            if run.setup_left <= _EPS:
                run.setup_left = 0.0
                set_up.append(run)
        else:
            run.work_left -= speed * step
            if run.work_left <= _EPS:
                computed.append(run)
    for run in set_up:
        fleet.begin(run, t)
    for run in computed:
        if run not in fleet.runs or run.work_left > _EPS:
            continue  # ended, or moved on, by a cancellation in this loop
        task_id = run.tasks.pop(0)
        fleet.done.add(task_id)
        for loser in fleet.policy.task_finished(task_id, run.node, t - run.started, t):
            fleet.cancel(task_id, loser, t)
        fleet.begin(run, t)
