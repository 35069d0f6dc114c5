"""`edgectl store ...`: check the data files and restore a backup."""

from __future__ import annotations

import typer

from edgectl.cli import render
from edgectl.cli.state import get_state
from edgectl.errors import UsageError
from edgectl.status import ExitStatus

app = typer.Typer(
    help="Check edgectl's data files; restore the last good state.", no_args_is_help=True
)

FILES = ("inventory", "facts", "jobs")


@app.command()
def check(ctx: typer.Context) -> None:
    """Check that every data file is readable."""
    state = get_state(ctx)
    store = state.fleet.store
    bad = 0
    for name in FILES:
        problem = store.check(name)
        if problem:
            bad += 1
            render.error(state.env, problem)
        else:
            present = "ok" if store.path(name).exists() else "absent (fine: made on first write)"
            render.line(state.env, f"{store.path(name)}: {present}")
    if bad:
        state.exit_status = ExitStatus.STORE


@app.command()
def restore(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Which file: inventory, facts or jobs."),
) -> None:
    """Put back the last good state of a data file (the broken one is kept aside)."""
    state = get_state(ctx)
    if name not in FILES:
        raise UsageError(f"unknown data file {name!r}: use one of {', '.join(FILES)}")
    aside = state.fleet.store.restore(name)
    kept = f"; the broken file is kept as {aside}" if aside else ""
    render.note(state.env, f"restored {state.fleet.store.path(name)} from its backup{kept}")
