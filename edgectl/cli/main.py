"""The `edgectl` program: `main(args, env) -> ExitStatus`, so tests run it in-process."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import typer

from edgectl import __version__
from edgectl.cli import fleet as fleet_cli
from edgectl.cli import inventory as inventory_cli
from edgectl.cli import job as job_cli
from edgectl.cli import provision as provision_cli
from edgectl.cli import store as store_cli
from edgectl.cli import top as top_cli
from edgectl.cli.completion import SHELLS, completion_script
from edgectl.cli.context import Environment
from edgectl.cli.render import error
from edgectl.cli.state import State, get_state
from edgectl.errors import EdgectlError, UsageError
from edgectl.status import ExitStatus

app = typer.Typer(
    name="edgectl",
    help="Agentless command-line toolkit and SSH fleet manager for edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,  # `edgectl completion SHELL` prints the scripts instead of editing rc files
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(inventory_cli.app, name="inventory")
app.add_typer(store_cli.app, name="store")
app.add_typer(job_cli.app, name="job")
fleet_cli.register(app)
provision_cli.register(app)
app.command()(top_cli.top)


def _version(ctx: typer.Context, value: bool) -> None:
    if value:
        get_state(ctx).env.stdout.write(f"edgectl {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: str | None = typer.Option(
        None,
        "--home",
        help="Data directory (default: $EDGECTL_HOME, else the platform's user data dir).",
        metavar="DIR",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Agentless command-line toolkit and SSH fleet manager for edge devices."""
    state = ctx.ensure_object(State)
    if home:
        state.env.home = home


@app.command()
def completion(
    ctx: typer.Context,
    shell: str = typer.Argument(..., help="bash, zsh or fish."),
) -> None:
    """Print the shell completion script (also shipped in completions/)."""
    if shell not in SHELLS:
        raise UsageError(f"unknown shell {shell!r}: use one of {', '.join(SHELLS)}")
    get_state(ctx).env.stdout.write(completion_script(shell))


def main(args: Sequence[str] | None = None, env: Environment | None = None) -> ExitStatus:
    """Run one command line; return its exit status instead of exiting."""
    env = env or Environment()
    state = State(env)
    if os.environ.get("_EDGECTL_COMPLETE"):
        # A TAB press from the shell scripts: register typer's shell classes (add_completion
        # is off, which also skips this), answer and exit.
        from typer._completion_classes import completion_init

        completion_init()
    try:
        result: Any = app(
            args=list(sys.argv[1:] if args is None else args),
            prog_name="edgectl",
            standalone_mode=False,
            obj=state,
        )
    except EdgectlError as exc:
        error(env, str(exc))
        return exc.exit_status
    except KeyboardInterrupt:
        error(env, "interrupted")
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        return ExitStatus.OK  # `edgectl ... | head` closed the pipe: not our failure
    except Exception as exc:
        code = getattr(exc, "exit_code", None)
        if code is not None and hasattr(exc, "format_message"):  # click's usage errors
            error(env, f"{exc.format_message()} (see: edgectl {_command_path(exc)}--help)")
            return ExitStatus(code) if code in ExitStatus._value2member_map_ else ExitStatus.USAGE
        if type(exc).__name__ == "Abort":
            error(env, "aborted")
            return ExitStatus.INTERRUPTED
        raise
    if isinstance(result, int) and result in ExitStatus._value2member_map_:
        return ExitStatus(result)
    return state.exit_status


def _command_path(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "") or ""
    words = path.split()[1:]
    return " ".join(words) + " " if words else ""


def run() -> None:
    """Console-script entry point."""
    status = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that does not fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(int(status))
