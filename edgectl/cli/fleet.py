"""`edgectl probe`, `status`, `run` and `top`: the fleet view."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import typer

from edgectl.cli import render
from edgectl.cli.completion import complete_selector
from edgectl.cli.state import State, get_state
from edgectl.status import ExitStatus

JSON = typer.Option(False, "--json", help="Print JSON for scripts.")
FORKS = typer.Option(100, "--forks", min=1, max=10_000, help="Nodes worked on at once.")
ACCEPT_NEW = typer.Option(
    False, "--accept-new", help="Trust and record unknown host keys (never changed ones)."
)
SELECTOR = typer.Argument(
    None, help="Which nodes (default: all).", autocompletion=complete_selector
)


def fleet_status(ok: int, total: int) -> ExitStatus:
    """0 when every node succeeded, PARTIAL when some did, ALL_FAILED when none did."""
    if ok == total:
        return ExitStatus.OK
    return ExitStatus.PARTIAL if ok else ExitStatus.ALL_FAILED


def human_bytes(value: Any) -> str:
    """1536 -> '1.5K'; None -> ''."""
    if value is None:
        return ""
    number = float(value)
    for unit in ("B", "K", "M", "G", "T", "P"):
        if abs(number) < 1024 or unit == "P":
            return f"{number:.0f}{unit}" if unit == "B" else f"{number:.1f}{unit}"
        number /= 1024
    return str(value)


def human_age(seconds: float | None) -> str:
    """42 -> '42s', 3700 -> '1h1m'."""
    if seconds is None:
        return "never"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 86400}d"


def _num(value: Any, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


FACT_HEADERS = [
    "NAME",
    "STATE",
    "LOAD1",
    "LOAD%",
    "MEM FREE",
    "DISK FREE",
    "TEMP",
    "TESSERACT",
    "RTT ms",
]


def fact_row(
    name: str, reachable: bool | None, reason: str | None, facts: dict[str, Any] | None
) -> list[str]:
    """One table row of facts, or the reason a node is down."""
    facts = facts or {}
    state = "up" if reachable else (reason or "down")
    langs = "+".join(facts.get("tesseract_langs") or [])
    tess = f"{facts.get('tesseract')} ({langs})" if facts.get("tesseract") else ""
    return [
        name,
        state,
        _num(facts.get("load1")),
        _num(facts.get("load_pct"), 0),
        human_bytes(facts.get("mem_available")),
        human_bytes(facts.get("disk_free")),
        _num(facts.get("temp_c"), 1),
        tess,
        _num(facts.get("rtt_ms"), 1),
    ]


def probe(
    ctx: typer.Context,
    selector: list[str] | None = SELECTOR,
    timeout: float = typer.Option(
        10.0, "--timeout", min=0.1, help="Seconds per node (connect, login, probe)."
    ),
    forks: int = FORKS,
    accept_new: bool = ACCEPT_NEW,
    full: bool = typer.Option(
        False,
        "--full",
        help="Re-read static facts (os, python3, tesseract languages) instead of the "
        "copy each node caches in its workdir.",
    ),
    as_json: bool = JSON,
) -> None:
    """Probe nodes over SSH (one exec each) and store their facts."""
    state = get_state(ctx)
    results = state.fleet.probe(
        selector or "all", timeout=timeout, forks=forks, accept_new=accept_new, full=full
    )
    if as_json:
        render.emit_json(state.env, [r.to_dict() for r in results])
    else:
        rows = [fact_row(r.name, r.reachable, r.reason, r.facts) for r in results]
        render.table(state.env, FACT_HEADERS, rows)
        for r in results:
            if not r.reachable:
                render.note(state.env, f"{r.name}: {r.reason}: {r.error}")
    state.exit_status = fleet_status(sum(r.reachable for r in results), len(results))


def status(
    ctx: typer.Context,
    selector: list[str] | None = SELECTOR,
    as_json: bool = JSON,
) -> None:
    """Show the stored facts and their age, without connecting to any node."""
    state = get_state(ctx)
    records = state.fleet.status(selector or "all")
    now = time.time()
    for record in records:
        probed = record.get("probed_at")
        record["age_s"] = None if probed is None else round(now - probed, 1)
    if as_json:
        render.emit_json(state.env, records)
        return
    rows = []
    for record in records:
        row = fact_row(
            record["name"], record.get("reachable"), record.get("reason"), record.get("facts")
        )
        rows.append([*row, human_age(record["age_s"])])
    render.table(state.env, [*FACT_HEADERS, "AGE"], rows)


def run(
    ctx: typer.Context,
    selector: str = typer.Argument(..., help="Which nodes.", autocompletion=complete_selector),
    command: list[str] = typer.Argument(..., help="The command, after --."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds per node."),
    forks: int = FORKS,
    accept_new: bool = ACCEPT_NEW,
    as_json: bool = JSON,
) -> None:
    """Run a command on many nodes; identical outputs are shown once with their nodes."""
    from edgectl.adhoc import group_outputs

    state = get_state(ctx)
    outcomes = state.fleet.run(
        selector, command, timeout=timeout, forks=forks, accept_new=accept_new
    )
    state.exit_status = fleet_status(sum(o.ok for o in outcomes), len(outcomes))
    if as_json:
        render.emit_json(state.env, [o.to_dict() for o in outcomes])
        return
    _print_groups(state, group_outputs(outcomes))


def _print_groups(state: State, groups: Sequence[tuple[list[str], Any]]) -> None:
    env = state.env
    for names, outcome in groups:
        if outcome.reason:
            what = f"unreachable ({outcome.reason}): {outcome.error}"
        else:
            what = f"exit {outcome.exit_status}" + (
                " (output truncated)" if outcome.truncated else ""
            )
        header = f"{','.join(names)} ({len(names)}) {what}"
        render.line(env, "-" * min(len(header), 72))
        render.line(env, header)
        render.line(env, "-" * min(len(header), 72))
        if outcome.stdout:
            env.stdout.write(
                outcome.stdout if outcome.stdout.endswith("\n") else outcome.stdout + "\n"
            )
        if outcome.stderr:
            env.stdout.write("".join(f"stderr: {line}\n" for line in outcome.stderr.splitlines()))


def register(app: typer.Typer) -> None:
    """Add the fleet-view commands to the main app."""
    app.command()(probe)
    app.command()(status)
    app.command()(run)
