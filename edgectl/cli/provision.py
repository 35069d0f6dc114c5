"""`edgectl provision PLAYBOOK [SELECTOR]`: apply a playbook, idempotently, in rolling batches."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgectl.cli import render
from edgectl.cli.completion import complete_selector
from edgectl.cli.fleet import ACCEPT_NEW, FORKS, JSON, fleet_status
from edgectl.cli.state import State, get_state

if TYPE_CHECKING:
    from edgectl.provision.report import ProvisionReport

# Found beside the package without importing edgectl.provision (which loads asyncio).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "playbooks"


def complete_playbook(incomplete: str) -> list[str]:
    """Shipped playbook names starting with what was typed."""
    names = sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))
    return [name for name in names if name.startswith(incomplete)]


def provision(
    ctx: typer.Context,
    playbook: str = typer.Argument(
        ...,
        help="A playbook file, or the name of a shipped one (base, ocr, analytics).",
        autocompletion=complete_playbook,
    ),
    selector: list[str] | None = typer.Argument(
        None, help="Which nodes (default: all).", autocompletion=complete_selector
    ),
    check: bool = typer.Option(False, "--check", help="Change nothing: report what would change."),
    diff: bool = typer.Option(False, "--diff", help="Show a unified diff of each file change."),
    serial: int | None = typer.Option(
        None, "--serial", min=1, help="Provision in rolling batches of N nodes."
    ),
    max_fail: float | None = typer.Option(
        None,
        "--max-fail",
        min=0,
        max=100,
        metavar="PCT",
        help="Stop (later batches skipped) when more than PCT percent of a batch failed.",
    ),
    timeout: float = typer.Option(
        30.0,
        "--timeout",
        min=0.1,
        help="Seconds to connect and for each check; a change may take max(S, 600).",
    ),
    forks: int = FORKS,
    accept_new: bool = ACCEPT_NEW,
    as_json: bool = JSON,
) -> None:
    """Apply a playbook: check each step, change only what differs, report per node."""
    from edgectl.provision import provision as run_playbook

    state = get_state(ctx)
    report = run_playbook(
        state.fleet,
        playbook,
        ",".join(selector) if selector else "all",
        check=check,
        serial=serial,
        max_fail=max_fail,
        timeout=timeout,
        forks=forks,
        accept_new=accept_new,
        progress=None if as_json else render.progress_factory(state.env, "provisioning"),
    )
    state.exit_status = fleet_status(report.succeeded, len(report.nodes))
    if as_json:
        render.emit_json(state.env, report.to_dict(with_diff=diff))
        return
    _print_report(state, report, diff)


def _print_report(state: State, report: ProvisionReport, diff: bool) -> None:
    """Steps per node, diffs if asked, then the per-node summary and who failed why."""
    env = state.env
    mode = " (check: nothing was changed)" if report.check else ""
    render.line(env, f"playbook {report.playbook} ({report.path}){mode}")
    rows = []
    for node in report.nodes:
        if node.status in ("unreachable", "skipped") and not node.steps:
            rows.append([node.name, "-", "-", node.status, node.error or ""])
            continue
        for step in node.steps:
            status = "would change" if report.check and step.status == "changed" else step.status
            rows.append([node.name, step.name, step.action, status, step.message])
    render.table(env, ["NODE", "STEP", "ACTION", "STATUS", "DETAIL"], rows)
    if diff:
        for node in report.nodes:
            for step in node.steps:
                if step.diff and step.status in ("changed", "failed"):
                    render.line(env, f"--- {node.name}: step {step.name}")
                    env.stdout.write(step.diff if step.diff.endswith("\n") else step.diff + "\n")
    render.line(env)
    summary = []
    for node in report.nodes:
        counts = [str(node.count(s)) for s in ("ok", "changed", "failed", "skipped")]
        summary.append([node.name, node.status, *counts, node.error or ""])
    render.table(env, ["NODE", "STATUS", "OK", "CHANGED", "FAILED", "SKIPPED", "WHY"], summary)
    totals = report.summary()
    render.line(
        env,
        f"{totals['nodes']} node(s): {totals['ok']} ok, {totals['changed']} changed, "
        f"{totals['failed']} failed, {totals['unreachable']} unreachable, "
        f"{totals['skipped']} skipped",
    )
    if report.stopped:
        render.note(env, report.stopped)
    if report.refresh_error:
        render.note(env, report.refresh_error)
    for node in report.failures():
        render.note(env, f"{node.name}: {node.status}: {node.error}")


def register(app: typer.Typer) -> None:
    """Add `provision` to the main app."""
    app.command()(provision)
