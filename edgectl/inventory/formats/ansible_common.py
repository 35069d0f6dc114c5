"""What Ansible INI and YAML inventories share: host ranges, the group tree, variables.

Both parsers fill an `AnsibleInventory`; `to_nodes` then resolves it as Ansible does:
groups nest through children, a group with no parent hangs under `all`, and variables
apply with the precedence all < parent group < child group < host.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any

from edgectl.errors import ImportFormatError, ValidationError
from edgectl.inventory.formats.common import build_node, stringify
from edgectl.inventory.model import (
    Node,
    check_host,
    check_label,
    check_name,
    check_path,
    check_port,
    check_user,
)

ROOT = "all"
UNGROUPED = "ungrouped"
MAX_RANGE_HOSTS = 100_000  # a typo like [0:9999999] should fail, not eat the memory

# node field -> the Ansible variables that set it: the current spelling, then older ones
FIELD_VARS: dict[str, tuple[str, ...]] = {
    "host": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "key": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "connection": ("ansible_connection",),
}
MAPPED_VARS = frozenset(name for names in FIELD_VARS.values() for name in names)
SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh")

_HOST_PORT = re.compile(r"(?P<host>.+):(?P<port>[0-9]+)")


@dataclass
class Var:
    """A variable's value and the line that set it (for errors)."""

    value: Any
    line: int | None


@dataclass
class Group:
    """An Ansible group as read: its own variables and its child groups."""

    name: str
    line: int | None
    vars: dict[str, Var] = field(default_factory=dict)
    children: dict[str, int | None] = field(default_factory=dict)  # child -> declaring line


@dataclass
class Host:
    """A host as read: its variables and the groups that list it directly."""

    name: str
    line: int | None
    vars: dict[str, Var] = field(default_factory=dict)
    groups: dict[str, int | None] = field(default_factory=dict)  # group -> listing line


class AnsibleInventory:
    """The groups and hosts of one Ansible inventory file, before resolution."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.groups: dict[str, Group] = {ROOT: Group(ROOT, None), UNGROUPED: Group(UNGROUPED, None)}
        self.hosts: dict[str, Host] = {}

    def error(self, line: int | None, message: str) -> ImportFormatError:
        """An ImportFormatError for this file."""
        return ImportFormatError(self.path, line, message)

    def group(self, name: str, line: int | None) -> Group:
        """The group called `name`, created (and its name checked) on first mention."""
        found = self.groups.get(name)
        if found is not None:
            return found
        try:
            check_name(name, "group name")
        except ValidationError as exc:
            raise self.error(line, exc.message) from None
        created = self.groups[name] = Group(name, line)
        return created

    def add_child(self, parent: str, child: str, line: int | None) -> None:
        """Record that `child` is a child group of `parent`."""
        if child == ROOT:
            raise self.error(line, f"group {ROOT!r} cannot be a child of {parent!r}")
        self.group(child, line)
        self.groups[parent].children.setdefault(child, line)

    def set_group_var(self, group: str, key: str, var: Var) -> None:
        """Set a group variable; the last assignment in the file wins, as in Ansible."""
        self.groups[group].vars[key] = var

    def add_host(
        self,
        group: str,
        name: str,
        line: int | None,
        host_vars: dict[str, Var],
        repeat_ok: bool = False,
    ) -> None:
        """List host `name` in `group` with its variables; a host may be in several groups.

        Listing a host twice in one group is an error unless `repeat_ok` (a YAML group that
        appears at two places of the tree may list its hosts at both).
        """
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = Host(name, line)
        elif group in host.groups and not repeat_ok:
            earlier = host.groups[group]
            raise self.error(
                line, f"duplicate host {name!r} in group {group!r} (lines {earlier} and {line})"
            )
        host.groups.setdefault(group, line)
        for key, var in host_vars.items():
            old = host.vars.get(key)
            if old is not None and old.value != var.value:
                # Ansible would silently keep the last one; an import should not guess
                raise self.error(
                    var.line,
                    f"host {name!r}: {key} is {stringify(old.value)!r} on line {old.line} "
                    f"and {stringify(var.value)!r} on line {var.line}",
                )
            host.vars.setdefault(key, var)

    def to_nodes(self) -> list[Node]:
        """Resolve groups and variables into nodes, in the order hosts first appear."""
        parents = self._parents()
        self._check_cycles()
        depth = self._depths()
        nodes = []
        for host in self.hosts.values():
            member_of = self._ancestors(set(host.groups), parents)
            ordered = sorted(member_of | {ROOT}, key=lambda g: (depth[g], g))
            merged: dict[str, Var] = {}
            for group in ordered:
                merged.update(_canonical(self.groups[group].vars))
            merged.update(_canonical(host.vars))
            groups = sorted(member_of - {ROOT, UNGROUPED})
            nodes.append(self._node(host, merged, groups))
        return nodes

    def _parents(self) -> dict[str, set[str]]:
        parents: dict[str, set[str]] = {name: set() for name in self.groups}
        for group in self.groups.values():
            for child in group.children:
                parents[child].add(group.name)
        for name, found in parents.items():
            if name != ROOT and not found:
                # a group nobody claims is a top-level group, under `all`
                self.groups[ROOT].children.setdefault(name, self.groups[name].line)
                found.add(ROOT)
        return parents

    def _check_cycles(self) -> None:
        state: dict[str, str] = {}  # "open" while on the current path, "done" after

        def visit(name: str, trail: list[str]) -> None:
            state[name] = "open"
            for child, line in self.groups[name].children.items():
                if state.get(child) == "open":
                    loop = [*trail[trail.index(child) :], child]
                    raise self.error(line, f"cycle in group children: {' -> '.join(loop)}")
                if child not in state:
                    visit(child, [*trail, child])
            state[name] = "done"

        for name in self.groups:
            if name not in state:
                visit(name, [name])

    def _depths(self) -> dict[str, int]:
        """Longest distance from `all`, which orders group variables as Ansible does."""
        depth: dict[str, int] = {}

        def walk(name: str, level: int) -> None:
            if depth.get(name, -1) >= level:
                return
            depth[name] = level
            for child in self.groups[name].children:
                walk(child, level + 1)

        walk(ROOT, 0)
        return depth

    @staticmethod
    def _ancestors(direct: set[str], parents: dict[str, set[str]]) -> set[str]:
        found = set(direct)
        todo = list(direct)
        while todo:
            for parent in parents[todo.pop()]:
                if parent not in found:
                    found.add(parent)
                    todo.append(parent)
        return found

    def _node(self, host: Host, merged: dict[str, Var], groups: list[str]) -> Node:
        """Check each value against the line that set it, then build the node."""
        fields: dict[str, Any] = {"name": host.name, "groups": groups}
        try:
            check_name(host.name)
        except ValidationError as exc:
            raise self.error(host.line, exc.message) from None
        for field_name, names in FIELD_VARS.items():
            if names[0] in merged:
                fields[field_name] = self._field(host.name, field_name, merged[names[0]])
        fields.setdefault("host", host.name)
        labels = {}
        for key, var in merged.items():
            if key in MAPPED_VARS:
                continue
            try:
                check_label(key, stringify(var.value))
            except ValidationError as exc:
                raise self.error(var.line, f"host {host.name!r}: {exc.message}") from None
            labels[key] = stringify(var.value)
        fields["labels"] = labels
        return build_node(self.path, host.line, **fields)

    def _field(self, name: str, field_name: str, var: Var) -> Any:
        value = var.value
        try:
            if field_name == "port":
                return check_port(value)
            text = stringify(value)
            if field_name == "host":
                return check_host(text)
            if field_name == "user":
                return check_user(text)
            if field_name == "key":
                return check_path(text, "key path")
        except ValidationError as exc:
            raise self.error(var.line, f"host {name!r}: {exc.message}") from None
        text = stringify(value)
        if text == "local":
            return "local"
        if text in SSH_CONNECTIONS:
            return "ssh"
        raise self.error(
            var.line,
            f"host {name!r}: ansible_connection {text!r} is not supported: use ssh or local",
        )


def _canonical(variables: dict[str, Var]) -> dict[str, Var]:
    """Rename older spellings (ansible_ssh_host...) to the current one, which wins a tie.

    Done per precedence level, so that a host's `ansible_ssh_user` still beats an
    `ansible_user` from `[all:vars]`.
    """
    renamed = dict(variables)
    for names in FIELD_VARS.values():
        for old in names[1:]:
            if old in renamed:
                var = renamed.pop(old)
                renamed.setdefault(names[0], var)
    return renamed


def split_host_port(pattern: str) -> tuple[str, str | None]:
    """Split `host:port` (Ansible's INI shorthand); a colon inside a range is not a port."""
    found = _HOST_PORT.fullmatch(pattern)
    if found and "]" not in found.group("port"):
        return found.group("host"), found.group("port")
    return pattern, None


def expand_hosts(pattern: str) -> list[str]:
    """Expand host ranges: `web[01:03]` -> web01..web03, `db-[a:c]`, `[1:9:2]` strides."""
    start = pattern.find("[")
    if start < 0:
        if "]" in pattern:
            raise ValueError(f"unmatched ']' in host pattern {pattern!r}")
        return [pattern]
    end = pattern.find("]", start)
    if end < 0:
        raise ValueError(f"unclosed range in host pattern {pattern!r}: missing ']'")
    head, tail = pattern[:start], pattern[end + 1 :]
    if "]" in head:
        raise ValueError(f"unmatched ']' in host pattern {pattern!r}")
    items = _range_items(pattern[start + 1 : end], pattern)
    rest = expand_hosts(tail)
    if len(items) * len(rest) > MAX_RANGE_HOSTS:
        raise ValueError(f"host pattern {pattern!r} expands to more than {MAX_RANGE_HOSTS} hosts")
    return [head + item + suffix for item in items for suffix in rest]


def _range_items(inner: str, pattern: str) -> list[str]:
    parts = inner.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(
            f"bad range [{inner}] in host pattern {pattern!r}: write [start:end] or "
            "[start:end:step]"
        )
    first, last = parts[0] or "0", parts[1]
    step_text = parts[2] if len(parts) == 3 else "1"
    if not step_text.isdigit() or int(step_text) < 1:
        raise ValueError(f"bad step {step_text!r} in host pattern {pattern!r}")
    step = int(step_text)
    if first.isdigit() and last.isdigit():
        # a leading zero asks for zero-padding to the width of the bounds
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        if width and len(last) != width:
            raise ValueError(
                f"bad range [{inner}] in host pattern {pattern!r}: a zero-padded range needs "
                "bounds of the same width"
            )
        low, high = int(first), int(last)
        if low > high:
            raise ValueError(f"bad range [{inner}] in host pattern {pattern!r}: start > end")
        if (high - low) // step + 1 > MAX_RANGE_HOSTS:
            raise ValueError(
                f"host pattern {pattern!r} expands to more than {MAX_RANGE_HOSTS} hosts"
            )
        return [str(n).zfill(width) for n in range(low, high + 1, step)]
    letters = string.ascii_letters
    if len(first) == 1 and len(last) == 1 and first in letters and last in letters:
        low, high = letters.index(first), letters.index(last)
        if low > high:
            raise ValueError(f"bad range [{inner}] in host pattern {pattern!r}: start > end")
        return [letters[n] for n in range(low, high + 1, step)]
    raise ValueError(
        f"bad range [{inner}] in host pattern {pattern!r}: use numbers or single letters"
    )
