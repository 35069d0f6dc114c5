"""Dynamic completion of node and group names from the inventory."""

from __future__ import annotations

import os

from edgectl.errors import EdgectlError


def _fleet_names(groups: bool) -> list[str]:
    from edgectl.api import Fleet

    try:
        fleet = Fleet(os.environ.get("EDGECTL_HOME"))
        if groups:
            return list(fleet.groups())
        return fleet.inventory.names()
    except EdgectlError:
        return []  # a broken store must not break the shell's completion


def complete_node(incomplete: str) -> list[str]:
    """Node names starting with what was typed."""
    return [n for n in _fleet_names(False) if n.startswith(incomplete)]


def complete_group(incomplete: str) -> list[str]:
    """Group names starting with what was typed."""
    return [g for g in _fleet_names(True) if g.startswith(incomplete)]


def complete_selector(incomplete: str) -> list[str]:
    """Node names and @groups for the last term of a selector."""
    head, sep, last = incomplete.rpartition(",")
    prefix = head + sep
    mark = last[:1] if last[:1] in "&!" else ""
    term = last[len(mark) :]
    if term.startswith("@"):
        found = ["@" + g for g in complete_group(term[1:])]
    else:
        found = complete_node(term)
        if not term:
            found += ["@" + g for g in complete_group("")]
        if "all".startswith(term) and not mark:
            found.insert(0, "all")
    return [prefix + mark + f for f in found]


SHELLS = ("bash", "zsh", "fish")


def completion_script(shell: str) -> str:
    """The completion script of a shell; it asks edgectl itself for candidates at each TAB."""
    from typer._completion_shared import get_completion_script

    return (
        get_completion_script(prog_name="edgectl", complete_var="_EDGECTL_COMPLETE", shell=shell)
        + "\n"
    )
