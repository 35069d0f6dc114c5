"""Functions of the python-step test playbooks: called as function(c, ctx) with a Fabric
Connection and edgectl's PythonContext."""

from __future__ import annotations

import shlex
from typing import Any


def write_marker(c: Any, ctx: Any) -> bool | str:
    """Write <workdir>/fabric-marker once; report whether anything changed."""
    marker = f"{ctx.workdir}/fabric-marker"
    if c.run(f"test -e {shlex.quote(marker)}", warn=True).ok:
        return False
    if ctx.check:
        return f"would write {marker}"
    name = shlex.quote(ctx.node["name"])
    c.run(f"echo written by fabric on {name} as $(id -un) > {shlex.quote(marker)}")
    return f"wrote {marker}"


def call_hook(c: Any, ctx: Any) -> bool:
    """Call the test's hook between two python steps (it replaces the node's host key)."""
    c.run("true")
    from tests.test_provision_python import HOOKS

    HOOKS["between"](ctx.node["name"])
    return True
