"""Per-invocation state shared by the commands through typer's context object."""

from __future__ import annotations

from functools import cached_property

import typer

from edgectl.api import Fleet
from edgectl.cli.context import Environment
from edgectl.status import ExitStatus


class State:
    """The environment, the fleet (opened on first use) and the exit status to return."""

    def __init__(self, env: Environment | None = None) -> None:
        self.env = env or Environment()
        self.exit_status = ExitStatus.OK

    @cached_property
    def fleet(self) -> Fleet:
        """The fleet of the chosen home directory."""
        return Fleet(self.env.home)


def get_state(ctx: typer.Context) -> State:
    """The State of this invocation (made on demand when a command runs without main())."""
    return ctx.ensure_object(State)
