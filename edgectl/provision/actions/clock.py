"""`clock`: the node's clock agrees with the controller's within N seconds.

Nothing is changed (setting clocks is NTP's job): the step reports the skew, and fails a
node whose clock is off by more than the limit, since jobs, logs and certificates all go
wrong there. The node's time comes from the gather command run before the first step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.provision.actions.base import Action
from edgectl.provision.context import NodeContext
from edgectl.provision.fields import FieldError, FieldReader
from edgectl.provision.plan import Output, Plan

if TYPE_CHECKING:
    from edgectl.provision.playbook import Step


@dataclass(frozen=True)
class ClockArgs:
    """The largest skew tolerated, in seconds."""

    max_skew: float


class Clock(Action):
    """A check that the node's clock is sane."""

    name = "clock"
    summary = "the node's clock within N seconds of the controller's (checked, never set)"

    def parse(self, value: Any, fields: FieldReader, base: Path) -> ClockArgs:
        """The maximum skew in seconds (a positive number)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise FieldError("clock", "must be the largest skew tolerated, in seconds (> 0)")
        return ClockArgs(float(value))

    def plan(self, args: ClockArgs, step: Step, ctx: NodeContext, output: Output | None) -> Plan:
        """ok within the limit, failed beyond it or when the node's time is unknown."""
        skew = ctx.clock_skew
        if skew is None:
            return Plan.failed("could not read the node's clock (`date +%s`)")
        direction = "ahead of" if skew >= 0 else "behind"
        text = f"clock {abs(skew):.1f} s {direction} the controller"
        if abs(skew) > args.max_skew:
            return Plan.failed(f"{text}, over the {args.max_skew:g} s allowed: check NTP")
        return Plan.ok(text)
