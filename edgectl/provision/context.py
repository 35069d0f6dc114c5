"""What a run knows about one node: who logs in, where home and workdir are, its facts.

One gather command per node, run before its first step, answers the questions every action
needs (home, uid, systemd, sudo, the node's clock); parsing its output is pure.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgectl.inventory.model import Node
from edgectl.provision.plan import parse_key_values

GATHER_SCRIPT = r"""
LC_ALL=C; export LC_ALL
echo "edgectl_gather=1"
echo "home=$HOME"
echo "user=$(id -un 2>/dev/null)"
echo "uid=$(id -u 2>/dev/null)"
echo "arch=$(uname -m 2>/dev/null)"
echo "system=$(uname -s 2>/dev/null)"
if [ -r /etc/os-release ]; then
  sed -n 's/^ID=/os_id=/p; s/^ID_LIKE=/os_like=/p' /etc/os-release | tr -d '"'"'"
fi
[ -d /run/systemd/system ] && echo "systemd=1"
command -v sudo >/dev/null 2>&1 && echo "sudo=1"
echo "time=$(date +%s.%N 2>/dev/null)"
echo "edgectl_gather_end=1"
"""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class GatherError(ValueError):
    """The gather output is not complete or not believable."""


@dataclass
class NodeContext:
    """One node as the actions see it: identity, paths, capabilities, variables."""

    node: Node
    user: str
    uid: int
    home: str
    workdir: str  # absolute
    arch: str = ""
    system: str = ""
    os_id: str = ""
    os_like: str = ""
    systemd: bool = False
    sudo: bool = False
    clock_skew: float | None = None  # node clock minus controller clock, seconds
    facts: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def is_root(self) -> bool:
        """True when the login user is root (no sudo needed)."""
        return self.uid == 0

    @property
    def debian_like(self) -> bool:
        """True on Debian, Ubuntu and their derivatives."""
        return "debian" in (self.os_id, *self.os_like.split()) or self.os_id == "ubuntu"

    def variables(self) -> dict[str, Any]:
        """Template values: the node's own (name, host, user, workdir...) win over labels,
        labels over playbook vars, vars over facts."""
        values: dict[str, Any] = {k: v for k, v in self.facts.items() if v is not None}
        values.update(self.vars)
        values.update(self.node.labels)
        values.update(
            {
                "name": self.node.name,
                "host": self.node.host,
                "port": self.node.port,
                "user": self.user,
                "home": self.home,
                "workdir": self.workdir,
            }
        )
        return values

    def path(self, text: str) -> str:
        """A node path made absolute: `~` is the home, a relative path starts there."""
        return expand_path(text, self.home)

    def when_facts(self) -> dict[str, Any]:
        """Facts for `when` selectors: the stored ones, refreshed by what gather saw."""
        merged = dict(self.facts)
        if self.arch:
            merged["arch"] = self.arch
        return merged


def expand_path(text: str, home: str) -> str:
    """`~`, `~/x` and relative paths resolved against home; the result is normalised."""
    if text == "~":
        text = home
    elif text.startswith("~/"):
        text = posixpath.join(home, text[2:])
    elif not text.startswith("/"):
        text = posixpath.join(home, text)
    return posixpath.normpath(text)


def parse_gather(
    output: str,
    node: Node,
    facts: Mapping[str, Any],
    vars: Mapping[str, Any],
    sent_at: float,
    received_at: float,
) -> NodeContext:
    """Build a NodeContext from the gather output and the controller's clock around it."""
    values = parse_key_values(output)
    if "edgectl_gather" not in values or "edgectl_gather_end" not in values:
        raise GatherError("the node did not answer the gather command completely")
    home = values.get("home", "")
    if not home.startswith("/") or _CONTROL.search(home):
        raise GatherError(f"the node reports no usable $HOME ({home[:80]!r})")
    try:
        uid = int(values.get("uid", ""))
    except ValueError:
        raise GatherError("the node reports no numeric uid (`id -u`)") from None
    user = _CONTROL.sub("", values.get("user", "")) or (node.user or "")
    return NodeContext(
        node=node,
        user=user,
        uid=uid,
        home=posixpath.normpath(home),
        workdir=expand_path(node.workdir, home),
        arch=_CONTROL.sub("", values.get("arch", ""))[:64],
        system=_CONTROL.sub("", values.get("system", ""))[:64],
        os_id=values.get("os_id", "").strip()[:64],
        os_like=values.get("os_like", "").strip()[:200],
        systemd=values.get("systemd") == "1",
        sudo=values.get("sudo") == "1",
        clock_skew=clock_skew(values.get("time", ""), sent_at, received_at),
        facts=dict(facts),
        vars=dict(vars),
    )


def clock_skew(text: str, sent_at: float, received_at: float) -> float | None:
    """The node's clock minus the controller's at the midpoint of the exchange."""
    text = text.strip()
    try:
        node_time = float(text)
    except ValueError:
        # `date` without %N support prints it literally: keep the whole seconds.
        try:
            node_time = float(text.split(".", 1)[0])
        except ValueError:
            return None
    if not math.isfinite(node_time) or node_time <= 0:
        return None
    return round(node_time - (sent_at + received_at) / 2, 3)
