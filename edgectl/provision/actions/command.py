"""`command`: run a command, guarded so that a second run does nothing.

A string runs under `sh -c` with every `${var}` value quoted as one word; an array is an
argv (each item one argument, `${list}` alone spreads into several). Guards: `creates`
(a path: skip when it exists), `unless` (skip when it exits 0), `only_if` (run only when it
exits 0). All guards are evaluated in one check command. A command without guards runs
every time and always reports `changed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.provision.actions.base import Action
from edgectl.provision.context import NodeContext
from edgectl.provision.fields import FieldError, FieldReader, check_string, path_problem
from edgectl.provision.plan import Command, Output, Plan, parse_key_values, sh
from edgectl.provision.template import render_argv, render_shell, render_text

if TYPE_CHECKING:
    from edgectl.provision.playbook import Step

GUARD_SCRIPT = r"""
if [ -n "$1" ] && [ -e "$1" ]; then echo "guard=creates"; exit 0; fi
if [ -n "$2" ] && (cd "${4:-.}" && sh -c "$2") </dev/null >/dev/null 2>&1; then
  echo "guard=unless"; exit 0
fi
if [ -n "$3" ] && ! (cd "${4:-.}" && sh -c "$3") </dev/null >/dev/null 2>&1; then
  echo "guard=only_if"; exit 0
fi
echo "guard=run"
"""

IN_DIR = 'cd "$1" || exit 1; shift; exec "$@"'


@dataclass(frozen=True)
class CommandArgs:
    """The command (shell text or argv), its guards and working directory."""

    command: str | tuple[str, ...]
    creates: str | None
    unless: str | None
    only_if: str | None
    chdir: str | None

    @property
    def guarded(self) -> bool:
        """Whether any guard is set."""
        return bool(self.creates or self.unless or self.only_if)


class CommandAction(Action):
    """A command, run when its guards say so."""

    name = "command"
    options = ("creates", "unless", "only_if", "chdir")
    summary = "a command (sh -c text or argv) with creates / unless / only_if guards"

    def parse(self, value: Any, fields: FieldReader, base: Path) -> CommandArgs:
        """A string or a non-empty array of strings, and the optional guards."""
        command: str | tuple[str, ...]
        if isinstance(value, list):
            if not value:
                raise FieldError("command", "must not be an empty array")
            command = tuple(fields.strings("command", value=value))
        else:
            command = check_string("command", value, multiline=True)
            if not command.strip():
                raise FieldError("command", "must not be empty")
        return CommandArgs(
            command,
            fields.string("creates", check=path_problem),
            fields.string("unless", multiline=True),
            fields.string("only_if", multiline=True),
            fields.string("chdir", check=path_problem),
        )

    def argv(self, args: CommandArgs, ctx: NodeContext) -> list[str]:
        """The command's argv on this node, values substituted (and quoted in shell text)."""
        variables = ctx.variables()
        if isinstance(args.command, str):
            argv = ["sh", "-c", render_shell(args.command, variables)]
        else:
            argv = render_argv(args.command, variables)
        if args.chdir:
            return ["sh", "-c", IN_DIR, "edgectl", self._chdir(args, ctx), *argv]
        return argv

    def _chdir(self, args: CommandArgs, ctx: NodeContext) -> str:
        return ctx.path(render_text(args.chdir, ctx.variables())) if args.chdir else ""

    def check(self, args: CommandArgs, step: Step, ctx: NodeContext) -> Command | None:
        """All guards in one command (none when the step has no guards)."""
        if not args.guarded:
            return None
        variables = ctx.variables()
        creates = ctx.path(render_text(args.creates, variables)) if args.creates else ""
        unless = render_shell(args.unless, variables) if args.unless else ""
        only_if = render_shell(args.only_if, variables) if args.only_if else ""
        return Command(
            sh(GUARD_SCRIPT, creates, unless, only_if, self._chdir(args, ctx)),
            become=step.become,
        )

    def plan(self, args: CommandArgs, step: Step, ctx: NodeContext, output: Output | None) -> Plan:
        """Run the command unless a guard says it is done already."""
        argv = self.argv(args, ctx)
        run = Command(tuple(argv), become=step.become)
        if not args.guarded:
            return Plan(commands=[run], changes=[f"run {run.shown()}"])
        if output is None or output.exit_status != 0:
            why = output.why() if output is not None else "no output"
            return Plan.failed(f"evaluating the guards failed: {why}")
        guard = parse_key_values(output.text).get("guard", "")
        if guard == "creates":
            return Plan.ok("creates: path exists")
        if guard == "unless":
            return Plan.ok("unless: condition holds")
        if guard == "only_if":
            return Plan.ok("only_if: condition does not hold")
        if guard != "run":
            return Plan.failed(f"unexpected guard output: {output.why(1)}")
        return Plan(commands=[run], changes=[f"run {run.shown()}"])
