"""`python`: `file.py:function`, called with a Fabric Connection for imperative logic.

The function is called as `function(c, ctx)`: `c` a fabric.Connection to the node (host
keys verified as the transport does), `ctx` a PythonContext. It returns True (or a text
saying what it changed) when it changed something, False or None when it did not, and
raises to fail the step. The runner calls it; this module only validates the step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.provision.actions.base import Action
from edgectl.provision.context import NodeContext
from edgectl.provision.fields import FieldError, FieldReader, check_string
from edgectl.provision.plan import Output, Plan

if TYPE_CHECKING:
    from edgectl.provision.playbook import Step

_TARGET = re.compile(r"(?P<file>[^:]+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class PythonArgs:
    """The file and function to call, and whether it honours --check."""

    path: Path
    function: str
    check_mode: bool

    @property
    def target(self) -> str:
        """`file.py:function` as written."""
        return f"{self.path.name}:{self.function}"


@dataclass
class PythonContext:
    """What a python step's function is told about the node and the run."""

    node: dict[str, Any]  # the inventory record: name, host, port, user, labels, ...
    variables: dict[str, Any]  # what ${var} would give: vars, labels, facts, name, workdir...
    workdir: str
    home: str
    user: str
    check: bool  # True under --check: the function must change nothing
    become: bool  # the step asked for root (use c.sudo)


class Python(Action):
    """A function of a local Python file, called with a Fabric Connection."""

    name = "python"
    options = ("check_mode",)
    summary = "file.py:function called with a Fabric Connection (host keys enforced)"

    def parse(self, value: Any, fields: FieldReader, base: Path) -> PythonArgs:
        """`file.py:function`, the file relative to the playbook; check_mode (false)."""
        text = check_string("python", value, template=False)
        found = _TARGET.fullmatch(text.strip())
        if not found:
            raise FieldError("python", f"{text!r} must look like 'file.py:function'")
        path = Path(found.group("file"))
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise FieldError("python", f"{path} does not exist")
        return PythonArgs(path, found.group("function"), fields.boolean("check_mode", False))

    def plan(self, args: PythonArgs, step: Step, ctx: NodeContext, output: Output | None) -> Plan:
        """Python steps are called by the runner, not planned from a check."""
        return Plan.failed("python steps are run by the runner")
