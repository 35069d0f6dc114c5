"""`service`: a systemd unit enabled and started (or stopped) where systemd runs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.provision.actions.base import Action
from edgectl.provision.context import NodeContext
from edgectl.provision.fields import FieldReader, check_string
from edgectl.provision.plan import Command, Output, Plan, parse_key_values, sh

if TYPE_CHECKING:
    from edgectl.provision.playbook import Step

_UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]{1,200}")

CHECK_SCRIPT = r"""
echo "enabled=$(systemctl is-enabled -- "$1" 2>/dev/null)"
echo "active=$(systemctl is-active -- "$1" 2>/dev/null)"
exit 0
"""


@dataclass(frozen=True)
class ServiceArgs:
    """A unit, whether it starts at boot, and whether it runs now."""

    unit: str
    enabled: bool
    state: str  # started | stopped


class Service(Action):
    """A systemd service in the wanted state."""

    name = "service"
    options = ("enabled", "state")
    summary = "a systemd unit enabled and started (skipped where systemd does not run)"

    def parse(self, value: Any, fields: FieldReader, base: Path) -> ServiceArgs:
        """The unit name, `enabled` (true) and `state` (started)."""
        unit = check_string(
            "service",
            value,
            template=False,
            check=lambda v: None if _UNIT.fullmatch(v) else f"{v!r} is not a systemd unit name",
        )
        return ServiceArgs(
            unit,
            fields.boolean("enabled", True),
            fields.choice("state", "started", ("started", "stopped")),
        )

    def check(self, args: ServiceArgs, step: Step, ctx: NodeContext) -> Command | None:
        """systemctl is-enabled and is-active (nothing to ask where systemd does not run)."""
        if not ctx.systemd:
            return None
        return Command(sh(CHECK_SCRIPT, args.unit))

    def plan(self, args: ServiceArgs, step: Step, ctx: NodeContext, output: Output | None) -> Plan:
        """enable/disable and start/stop where the unit differs from what is wanted."""
        if not ctx.systemd:
            return Plan.skipped("systemd is not running on this node")
        if output is None or output.exit_status != 0:
            return Plan.failed("asking systemctl failed")
        values = parse_key_values(output.text)
        enabled = values.get("enabled", "").strip()
        active = values.get("active", "").strip()
        if enabled in ("", "not-found"):
            return Plan.failed(f"no systemd unit {args.unit!r} on this node")
        commands = []
        changes = []
        if args.enabled and enabled not in ("enabled", "static", "alias", "indirect", "generated"):
            commands.append(Command(("systemctl", "enable", "--", args.unit), become=step.become))
            changes.append(f"enable {args.unit} (was {enabled or 'unknown'})")
        if not args.enabled and enabled == "enabled":
            commands.append(Command(("systemctl", "disable", "--", args.unit), become=step.become))
            changes.append(f"disable {args.unit}")
        if args.state == "started" and active != "active":
            commands.append(Command(("systemctl", "start", "--", args.unit), become=step.become))
            changes.append(f"start {args.unit} (was {active or 'unknown'})")
        if args.state == "stopped" and active == "active":
            commands.append(Command(("systemctl", "stop", "--", args.unit), become=step.become))
            changes.append(f"stop {args.unit}")
        if not commands:
            return Plan.ok(f"{args.unit} {enabled}, {active}")
        return Plan(commands=commands, changes=changes)
