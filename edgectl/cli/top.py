"""`edgectl top`: a live table of the fleet, refreshed over pooled connections."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import typer

from edgectl.cli import render
from edgectl.cli.completion import complete_selector
from edgectl.cli.context import Environment
from edgectl.cli.fleet import FACT_HEADERS, fact_row, fleet_status
from edgectl.cli.state import get_state
from edgectl.facts.store import ProbeResult
from edgectl.inventory.model import Node

if TYPE_CHECKING:
    import asyncio


def _rows(results: Sequence[ProbeResult]) -> list[list[str]]:
    return [fact_row(r.name, r.reachable, r.reason, r.facts) for r in results]


def _live_table(results: Sequence[ProbeResult], round_no: int, seconds: float) -> Any:
    from rich.table import Table

    up = sum(r.reachable for r in results)
    table = Table(
        title=f"edgectl top - {up}/{len(results)} up - round {round_no} ({seconds:.2f} s) - q to quit",
        box=None,
        header_style="bold",
    )
    for header in FACT_HEADERS:
        table.add_column(header)
    for result, row in zip(results, _rows(results), strict=True):
        style = None if result.reachable else "red"
        table.add_row(*row, style=style)
    return table


@contextlib.contextmanager
def _keys(env: Environment) -> Iterator[asyncio.Event]:
    """An event set when `q` is typed on the terminal (stdin in cbreak mode meanwhile)."""
    import asyncio

    quit_event = asyncio.Event()
    if not sys.stdin.isatty():
        yield quit_event
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def on_key() -> None:
        if sys.stdin.read(1) in ("q", "Q"):
            quit_event.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    try:
        yield quit_event
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _watch(
    ctx: typer.Context,
    nodes: list[Node],
    interval: float,
    count: int | None,
    timeout: float,
    forks: int,
) -> list[ProbeResult]:
    import asyncio

    state = get_state(ctx)
    env, fleet = state.env, state.fleet
    results: list[ProbeResult] = []
    live: Any = None
    if env.stdout_isatty:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=env.stdout, no_color=not env.colour, force_terminal=True)
        live = Live(console=console, auto_refresh=False)
    with contextlib.ExitStack() as stack:
        quit_event = stack.enter_context(_keys(env))
        if live is not None:
            stack.enter_context(live)
        async with fleet.pool(timeout, forks) as pool:
            round_no = 0
            while count is None or round_no < count:
                round_no += 1
                started = time.monotonic()
                results = await fleet.probe_async(nodes, pool, timeout)
                seconds = time.monotonic() - started
                if live is not None:
                    live.update(_live_table(results, round_no, seconds), refresh=True)
                else:
                    render.table(env, FACT_HEADERS, _rows(results))
                    env.stdout.flush()
                if count is not None and round_no >= count:
                    break
                try:
                    await asyncio.wait_for(quit_event.wait(), max(0.0, interval - seconds))
                    break
                except asyncio.TimeoutError:
                    pass
    return results


def top(
    ctx: typer.Context,
    selector: list[str] | None = typer.Argument(
        None, help="Which nodes (default: all).", autocompletion=complete_selector
    ),
    interval: float = typer.Option(
        2.0, "--interval", "-n", min=0.2, help="Seconds between refreshes."
    ),
    count: int | None = typer.Option(
        None,
        "--count",
        "-c",
        min=1,
        help="Stop after N refreshes (default: until q; 1 without a terminal).",
    ),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds per node and round."),
    forks: int = typer.Option(100, "--forks", min=1, help="Nodes probed at once."),
) -> None:
    """A live view of load, memory, disk and temperature; q or Ctrl-C quits."""
    state = get_state(ctx)
    nodes = state.fleet.nodes(selector or "all")
    if count is None and not state.env.stdout_isatty:
        count = 1  # a script gets one round, not an endless stream
    import asyncio  # kept out of start-up

    try:
        results = asyncio.run(_watch(ctx, nodes, interval, count, timeout, forks))
    except KeyboardInterrupt:
        return
    state.exit_status = fleet_status(sum(r.reachable for r in results), len(results))
