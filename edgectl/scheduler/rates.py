"""How fast a node works: learned from finished tasks, guessed from its facts before that."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from edgectl.scheduler.model import NodeState


def background_load(load1: float | None, own_running: int) -> float:
    """Load not caused by our tasks: the probe's load1 minus what we were running then."""
    if load1 is None:
        return 0.0
    return max(0.0, load1 - own_running)


def slot_count(state: NodeState, background: float, extra: int = 0) -> int:
    """Tasks a node should run at once: its free cores, plus `extra` when it has two or more."""
    # The extra slots keep the cores computing while a chunk's inputs are pushed; on a
    # single free core one more task would halve the speed of the one running.
    free = max(1, math.floor(state.cores - background + 0.5)) if state.cores else 1
    return free + (extra if free >= 2 else 0)


def gate_size(cores: int | None, background: float) -> int:
    """Tasks that compute at once past a node's gate: its cores free of background load,
    rounded up (a core partly free still computes), and at least one."""
    return max(1, math.ceil((cores or 1) - background - 1e-9))


def free_cores(state: NodeState, background: float, min_share: float) -> float:
    """Cores left for our tasks: cores x max(min_share, 1 - background / cores)."""
    cores = state.cores or 1
    return cores * max(min_share, 1.0 - background / cores)


def slot_share(state: NodeState, background: float, slots: int, min_share: float) -> float:
    """The share of one core each slot gets when every slot is busy."""
    return min(1.0, free_cores(state, background, min_share) / max(1, slots))


def remaining_time(expected_now: float, expected_then: float, elapsed: float) -> float:
    """Seconds a running task still needs: the rest of its estimate, or its overrun again."""
    # A task past the estimate made at dispatch shows that estimate was wrong by at least
    # the overrun, so the prediction grows while the task stays late, never sticks at 0.
    return max(0.0, expected_now - elapsed, elapsed - expected_then)


@dataclass
class RateBook:
    """Per node, an exponentially weighted average of work units per second per core."""

    # Samples are divided by the share of a core each task had, so that a node's rate
    # stays comparable when its slots or its background load change.

    smoothing: float = 0.3
    jump: float = 3.0  # a sample this many times off the average replaces it
    prior_weight: float = 1  # samples' worth of pull toward the fleet's median
    rates: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)

    def observe(self, node: str, work: float, seconds: float, share: float = 1.0) -> None:
        """Fold one finished task, which had `share` of a core, into the node's rate."""
        if work <= 0 or seconds <= 0 or share <= 0:
            return
        sample = work / seconds / share
        old = self.rates.get(node)
        if old is None or not 1 / self.jump < sample / old < self.jump:
            # The first sample, or one so far off that the node itself changed (throttled,
            # loaded, or freed): start again from it rather than averaging it away.
            self.rates[node], self.samples[node] = sample, 1
            return
        count = self.samples[node] = self.samples[node] + 1
        weight = max(self.smoothing, 1 / count)  # a plain mean until the average is settled
        self.rates[node] = weight * sample + (1 - weight) * old

    def observed(self, node: str) -> float | None:
        """The learned per-core rate of a node, or None before its first finished task."""
        return self.rates.get(node)

    def unit(self) -> float:
        """The per-core rate assumed for a node not yet measured: the fastest seen so far."""
        # Optimistic on purpose: a large task then waits a little for an unknown node's
        # first (small) task to show its speed rather than go to a node known to be slow;
        # if that first task runs late, the lateness itself lowers the node's rate.
        return max(self.rates.values(), default=1.0)

    def estimate(self, node: str) -> float | None:
        """The per-core rate to plan with: the learned one, pulled toward the fleet's median."""
        # The median counts as `prior_weight` more samples, so that one lucky task does
        # not make a node look fastest of all: every sample is noisy and the plan favours
        # the highest estimate.
        learned = self.rates.get(node)
        if learned is None:
            return None
        count = self.samples.get(node, 1)
        fleet = statistics.median(self.rates[name] for name in sorted(self.rates))
        pulled = (count * learned + self.prior_weight * fleet) / (count + self.prior_weight)
        # Never pulled up: a node measured slow (say, one that just slowed down) is planned
        # as slow, or it is handed work it would finish long after every other node.
        return min(learned, pulled)

    def slot_rate(self, state: NodeState, background: float, slots: int, min_share: float) -> float:
        """The rate of one slot when all are busy: the per-core rate times the slot's share."""
        core = self.estimate(state.name)
        return (self.unit() if core is None else core) * slot_share(
            state, background, slots, min_share
        )
