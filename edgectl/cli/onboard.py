"""`edgectl inventory discover` and `inventory bootstrap`: from addresses to managed nodes.

edgectl inventory discover 10.0.0.0/24 --add --group new
edgectl inventory bootstrap @new --user pi --password-env PI_PASSWORD --accept-new
edgectl provision base @new
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import typer

from edgectl.cli import render
from edgectl.cli.completion import complete_group, complete_selector
from edgectl.cli.fleet import ACCEPT_NEW, JSON, fleet_status
from edgectl.cli.state import get_state
from edgectl.errors import UsageError
from edgectl.status import ExitStatus


def discover(
    ctx: typer.Context,
    address_range: str = typer.Argument(
        ...,
        metavar="RANGE",
        help="A CIDR (10.0.0.0/24), a range (10.0.0.5-10.0.0.40, 127.0.1.1-20), addresses "
        "(a,b; addr:port) or a file of them.",
    ),
    port: list[int] = typer.Option(
        [22], "--port", "-p", min=1, max=65535, help="Port to knock on (repeatable)."
    ),
    add: bool = typer.Option(False, "--add", help="Add the new SSH servers to the inventory."),
    group: str | None = typer.Option(
        None, "--group", "-g", help="Put added nodes in this group.", autocompletion=complete_group
    ),
    user: str | None = typer.Option(None, "--user", help="Login user of added nodes."),
    timeout: float = typer.Option(
        2.0, "--timeout", min=0.05, max=60, help="Seconds per address to answer."
    ),
    concurrency: int = typer.Option(
        256, "--concurrency", min=1, max=4096, help="Addresses knocked on at once."
    ),
    as_json: bool = JSON,
) -> None:
    """Find hosts whose port answers with an SSH banner; only the given addresses are tried."""
    from edgectl.onboard import discover as find

    state = get_state(ctx)
    found = find(
        state.fleet,
        address_range,
        port,
        timeout=timeout,
        concurrency=concurrency,
        add=add,
        group=group,
        user=user,
    )
    if as_json:
        render.emit_json(state.env, [item.to_dict() for item in found])
    else:
        rows = [[f.host, str(f.port), f.banner, f.known_as or f.name, f.state] for f in found]
        render.table(state.env, ["HOST", "PORT", "BANNER", "NAME", "STATE"], rows)
        added = sum(f.state == "added" for f in found)
        render.note(state.env, f"{len(found)} SSH server(s) found, {added} added")
    if not found:
        state.exit_status = ExitStatus.NOT_FOUND


def password_reader(env_var: str | None) -> Callable[[], str]:
    """The password source: an environment variable, or a no-echo prompt on a terminal.

    Checked now, read later (only if some node needs it): a script without either gets a
    clear error before anything is contacted.
    """
    if env_var is not None:
        if not os.environ.get(env_var):
            raise UsageError(f"--password-env {env_var}: that environment variable is not set")
        return lambda: os.environ[env_var]
    if not sys.stdin.isatty():
        raise UsageError(
            "bootstrap needs the nodes' password: pass --password-env VAR (the name of an "
            "environment variable holding it) or run on a terminal to be prompted"
        )

    def prompt() -> str:
        import getpass

        secret = getpass.getpass("SSH password for the nodes (not echoed): ")
        if not secret:
            raise UsageError("no password given")
        return secret

    return prompt


def bootstrap(
    ctx: typer.Context,
    selector: str = typer.Argument(..., help="Which nodes.", autocompletion=complete_selector),
    user: str | None = typer.Option(
        None, "--user", help="Log in as this user (and record it on the nodes)."
    ),
    password_env: str | None = typer.Option(
        None,
        "--password-env",
        metavar="VAR",
        help="Read the password from this environment variable (else a prompt on a terminal).",
    ),
    accept_new: bool = ACCEPT_NEW,
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds per node."),
    forks: int = typer.Option(50, "--forks", min=1, max=1000, help="Nodes worked on at once."),
    as_json: bool = JSON,
) -> None:
    """Install edgectl's key on nodes by one password login, then prove a key-only login."""
    from edgectl.onboard import bootstrap as install

    state = get_state(ctx)
    reader = password_reader(password_env)
    results = install(
        state.fleet,
        selector,
        reader,
        user=user,
        accept_new=accept_new,
        timeout=timeout,
        forks=forks,
    )
    state.exit_status = fleet_status(sum(r.ok for r in results), len(results))
    if as_json:
        render.emit_json(state.env, [r.to_dict() for r in results])
        return
    rows = [[r.name, r.status, "; ".join(r.steps) or (r.error or "")] for r in results]
    render.table(state.env, ["NODE", "STATUS", "DETAIL"], rows)
    for r in results:
        if not r.ok:
            render.note(state.env, f"{r.name}: {r.reason}: {r.error}")


def register(app: typer.Typer) -> None:
    """Add `discover` and `bootstrap` to the inventory app."""
    app.command()(discover)
    app.command()(bootstrap)
