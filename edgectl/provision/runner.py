"""The one part of provisioning that does I/O: gather, check, apply, in rolling batches.

Per node: one gather command, then per step one check command, the action's pure plan,
and (unless --check) the plan's commands. A failed step ends that node's run (its later
steps are reported skipped). Per batch: every node runs concurrently through the pool;
when more than --max-fail percent of a batch failed, later batches do not start and their
nodes are reported skipped.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgectl.inventory.model import Node
from edgectl.provision.actions import ACTIONS
from edgectl.provision.actions.python import PythonArgs, PythonContext
from edgectl.provision.context import GATHER_SCRIPT, GatherError, NodeContext, parse_gather
from edgectl.provision.plan import Command, Output, Plan
from edgectl.provision.playbook import Playbook, PlaybookError, Step
from edgectl.provision.pythonstep import (
    PythonFunction,
    PythonStepError,
    call_python_step,
    load_function,
)
from edgectl.provision.report import NodeReport, ProvisionReport, StepResult
from edgectl.provision.template import TemplateError
from edgectl.transport import Connection, ConnectionPool, TransportError

GATHER_OUTPUT_CAP = 64 * 1024
CHECK_OUTPUT_CAP = 4 * 1024 * 1024  # a file check returns up to 1 MiB of content
DEFAULT_CHANGE_TIMEOUT = 600.0  # seconds for one change command (package installs are slow)
SUDO = ("sudo", "-n", "--")

AfterBatch = Callable[[list[Node]], Awaitable[Any]]


@dataclass
class RunSettings:
    """How a run behaves: dry run, batches, failure threshold, timeouts."""

    check: bool = False
    serial: int | None = None  # nodes per batch; None = all at once
    max_fail: float | None = None  # percent of a batch; None = never stop early
    check_timeout: float | None = None  # per check command (None: the pool's command timeout)
    change_timeout: float = DEFAULT_CHANGE_TIMEOUT  # per change command unless step.timeout


def with_become(command: Command, ctx: NodeContext) -> list[str]:
    """The argv to run: under `sudo -n` (never prompting) when the step needs root."""
    if command.become and not ctx.is_root:
        return [*SUDO, *command.argv]
    return list(command.argv)


def failure_message(command: Command, output: Output, ctx: NodeContext) -> str:
    """Why a change command failed, with a hint when it was sudo that refused."""
    why = output.why()
    if command.become and not ctx.is_root:
        if "password is required" in why or "a terminal is required" in why:
            return f"needs root: `sudo -n` refused ({why}); log in as root or allow sudo"
        if output.exit_status == 127 and "sudo" in why:
            return f"needs root: sudo is not installed and {ctx.user} is not root"
    status = "killed or cut off" if output.exit_status is None else f"exited {output.exit_status}"
    return f"`{command.shown()}` {status}: {why}"


class Runner:
    """Runs one playbook over nodes through a connection pool."""

    def __init__(
        self,
        playbook: Playbook,
        pool: ConnectionPool,
        facts: Mapping[str, Mapping[str, Any]],
        settings: RunSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.playbook = playbook
        self.pool = pool
        self.facts = facts
        self.settings = settings or RunSettings()
        self.clock = clock
        self.functions = self._load_functions()

    def _load_functions(self) -> dict[tuple[str, str], PythonFunction]:
        """Import every python step's function before any node is touched."""
        functions = {}
        for step in self.playbook.steps:
            if isinstance(step.args, PythonArgs):
                key = (str(step.args.path), step.args.function)
                try:
                    functions[key] = load_function(step.args.path, step.args.function)
                except PythonStepError as exc:
                    raise PlaybookError(
                        f"{self.playbook.path}: step {step.index} ({step.name!r}): "
                        f"field 'python': {exc}"
                    ) from None
        return functions

    async def run(
        self,
        nodes: Sequence[Node],
        after_batch: AfterBatch | None = None,
        on_done: Callable[[str], None] | None = None,
    ) -> ProvisionReport:
        """Provision nodes batch by batch; return every node's report, in the given order."""
        settings = self.settings
        report = ProvisionReport(
            self.playbook.name,
            str(self.playbook.path),
            settings.check,
            settings.serial,
            settings.max_fail,
        )
        reports = {node.name: NodeReport(node.name, status="skipped") for node in nodes}
        size = settings.serial or max(1, len(nodes))
        batches = [list(nodes[i : i + size]) for i in range(0, len(nodes), size)]
        for number, batch in enumerate(batches, start=1):

            async def one(node: Node, conn: Connection, number: int = number) -> NodeReport:
                return await self._node(node, conn, number)

            outcomes = await self.pool.run_all(batch, one, on_done)
            for node in batch:
                outcome = outcomes[node.name]
                if isinstance(outcome, TransportError):
                    reports[node.name] = NodeReport(
                        node.name, "unreachable", outcome.reason, str(outcome), number
                    )
                else:
                    reports[node.name] = outcome
            reached = [n for n in batch if reports[n.name].status != "unreachable"]
            if after_batch is not None and reached and not settings.check:
                try:
                    await after_batch(reached)
                    report.refreshed.extend(n.name for n in reached)
                except Exception as exc:
                    # The nodes are provisioned either way: say the facts are stale, go on.
                    report.refresh_error = f"refreshing facts failed: {exc}"
            if settings.serial:
                for node in batch:  # a rolling run over many nodes keeps few connections open
                    await self.pool.discard(node)
            failed = sum(reports[n.name].failed for n in batch)
            limit = settings.max_fail
            if limit is not None and failed * 100 > limit * len(batch) and number < len(batches):
                report.stopped = (
                    f"stopped after batch {number} of {len(batches)}: {failed} of "
                    f"{len(batch)} node(s) failed ({100 * failed / len(batch):.0f}%), "
                    f"over --max-fail {limit:g}%"
                )
                for later in batches[number:]:
                    for node in later:
                        reports[node.name].error = f"not run: {report.stopped}"
                break
        report.nodes = [reports[node.name] for node in nodes]
        return report

    async def _gather(self, node: Node, conn: Connection) -> NodeContext:
        """Run the gather command and build the node's context."""
        sent = self.clock()
        result = await conn.run(
            ["sh", "-c", GATHER_SCRIPT],
            timeout=self.settings.check_timeout,
            max_output=GATHER_OUTPUT_CAP,
        )
        received = self.clock()
        if result.exit_status != 0:
            raise GatherError(f"gather command exited {result.exit_status}")
        return parse_gather(
            result.stdout_text,
            node,
            self.facts.get(node.name) or {},
            self.playbook.vars,
            sent,
            received,
        )

    async def _node(self, node: Node, conn: Connection, batch: int) -> NodeReport:
        """Every step on one node, stopping at the first failure."""
        report = NodeReport(node.name, batch=batch)
        try:
            ctx = await self._gather(node, conn)
        except (GatherError, TransportError) as exc:
            report.status = "failed"
            report.error = f"gather: {exc}"
            report.steps = [
                StepResult(s.name, s.action, "skipped", "not run: gather failed")
                for s in self.playbook.steps
            ]
            return report
        report.clock_skew = ctx.clock_skew
        failed = False
        for step in self.playbook.steps:
            if failed:
                report.steps.append(
                    StepResult(step.name, step.action, "skipped", "not run: an earlier step failed")
                )
                continue
            started = time.monotonic()
            result = await self._step(step, ctx, conn)
            result.duration = time.monotonic() - started
            report.steps.append(result)
            failed = result.status == "failed"
        report.finish()
        return report

    async def _step(self, step: Step, ctx: NodeContext, conn: Connection) -> StepResult:
        """One step on one node: when, check, plan, apply."""
        if step.when is not None and not step.when.matches(ctx.node, ctx.when_facts()):
            return StepResult(step.name, step.action, "skipped", f"when {step.when_text!r}: no")
        try:
            if isinstance(step.args, PythonArgs):
                return await self._python(step, step.args, ctx)
            return await self._planned(step, ctx, conn)
        except TemplateError as exc:
            return StepResult(step.name, step.action, "failed", str(exc))
        except TransportError as exc:
            return StepResult(step.name, step.action, "failed", f"{exc.reason}: {exc}")
        except Exception as exc:
            # A bug in an action is this step's failure, reported, not the whole node's.
            message = f"internal error: {type(exc).__name__}: {exc}"
            return StepResult(step.name, step.action, "failed", message)

    async def _exec(
        self, command: Command, ctx: NodeContext, conn: Connection, timeout: float | None
    ) -> Output:
        """Run one command on the node and keep what the actions read."""
        result = await conn.run(
            with_become(command, ctx),
            stdin=command.stdin,
            timeout=timeout,
            max_output=CHECK_OUTPUT_CAP,
        )
        status = None if result.truncated else result.exit_status
        return Output(status, result.stdout, result.stderr)

    async def _planned(self, step: Step, ctx: NodeContext, conn: Connection) -> StepResult:
        """Check, plan and (unless --check) apply one step."""
        action = ACTIONS[step.action]
        check = action.check(step.args, step, ctx)
        output = None
        if check is not None and check.become and not ctx.is_root and not ctx.sudo:
            return StepResult(step.name, step.action, "failed", self._no_root(ctx))
        if check is not None:
            output = await self._exec(check, ctx, conn, self.settings.check_timeout)
        plan = action.plan(step.args, step, ctx, output)
        result = _result(step, plan)
        if plan.status != "changed" or self.settings.check:
            return result
        if any(c.become for c in plan.commands) and not ctx.is_root and not ctx.sudo:
            result.status = "failed"
            result.message = self._no_root(ctx)
            return result
        timeout = step.timeout or self.settings.change_timeout
        queue = list(plan.commands)
        ran: list[Command] = []
        recovered = False
        # Bounded: each pass pops one command; a recovery adds commands at most once.
        while queue:
            command = queue.pop(0)
            out = await self._exec(command, ctx, conn, timeout)
            ran.append(command)
            if out.ok:
                continue
            retry = None if recovered else action.recover(step.args, step, ctx, command, out, ran)
            if retry:
                recovered = True
                queue = [*retry, *queue]
                continue
            result.status = "failed"
            result.message = failure_message(command, out, ctx)
            return result
        return result

    @staticmethod
    def _no_root(ctx: NodeContext) -> str:
        return f"needs root: {ctx.user} is not root and sudo is not installed on the node"

    async def _python(self, step: Step, args: PythonArgs, ctx: NodeContext) -> StepResult:
        """Call a python step's function with a verified Fabric Connection."""
        if ctx.node.connection != "ssh":
            return StepResult(step.name, step.action, "failed", "python steps need an SSH node")
        if self.settings.check and not args.check_mode:
            return StepResult(
                step.name,
                step.action,
                "skipped",
                "not run under --check (the step does not set check_mode = true)",
            )
        context = PythonContext(
            node=ctx.node.to_dict(),
            variables=ctx.variables(),
            workdir=ctx.workdir,
            home=ctx.home,
            user=ctx.user,
            check=self.settings.check,
            become=step.become,
        )
        function = self.functions[(str(args.path), args.function)]
        timeout = step.timeout or self.settings.change_timeout
        try:
            value = await call_python_step(function, ctx.node, self.pool.options, context, timeout)
        except PythonStepError as exc:
            return StepResult(step.name, step.action, "failed", str(exc))
        except Exception as exc:
            message = f"{args.target} raised {type(exc).__name__}: {exc}"
            return StepResult(step.name, step.action, "failed", message)
        if value is None or value is False:
            return StepResult(step.name, step.action, "ok", f"{args.target}: nothing changed")
        text = value if isinstance(value, str) else f"{args.target} changed the node"
        return StepResult(step.name, step.action, "changed", text, changes=[text])


def _result(step: Step, plan: Plan) -> StepResult:
    """The step result a plan gives before anything is applied."""
    status = plan.status
    if status == "failed":
        message = plan.fail or "failed"
    elif status == "skipped":
        message = plan.skip or "skipped"
    elif status == "changed":
        message = "; ".join(plan.changes) or "changed"
    else:
        message = plan.note
    return StepResult(step.name, step.action, status, message, list(plan.changes), plan.diff)
