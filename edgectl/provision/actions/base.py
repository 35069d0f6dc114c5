"""The shape every action has: parse its fields, name a check, plan from the check's output."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgectl.provision.context import NodeContext
from edgectl.provision.fields import FieldReader
from edgectl.provision.plan import Command, Output, Plan

if TYPE_CHECKING:
    from edgectl.provision.playbook import Step


class Action:
    """One kind of step. Subclasses are pure: no I/O, no clock; the runner does the rest."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()  # fields a step may give besides the action key
    summary: ClassVar[str] = ""

    def parse(self, value: Any, fields: FieldReader, base: Path) -> Any:
        """Validate the action's value and options; return its arguments."""
        raise NotImplementedError

    def check(self, args: Any, step: Step, ctx: NodeContext) -> Command | None:
        """The one command that reads the current state (None: nothing to read)."""
        return None

    def plan(self, args: Any, step: Step, ctx: NodeContext, output: Output | None) -> Plan:
        """From the check's output, the commands that bring the node to the wanted state."""
        raise NotImplementedError

    def recover(
        self,
        args: Any,
        step: Step,
        ctx: NodeContext,
        failed: Command,
        output: Output,
        ran: list[Command],
    ) -> list[Command] | None:
        """Commands worth one more try after `failed` failed (None: the step fails).

        `ran` holds the commands run so far in this step, the failed one included.
        """
        return None


def check_failed(output: Output | None, what: str) -> Plan | None:
    """A failed Plan when the check command itself failed, else None."""
    if output is None:
        return Plan.failed(f"{what}: no check output")
    if output.exit_status != 0:
        return Plan.failed(f"{what} failed (exit {output.exit_status}): {output.why()}")
    return None
