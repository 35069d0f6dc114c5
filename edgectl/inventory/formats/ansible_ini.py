"""Ansible INI inventories: `[group]`, `[group:children]`, `[group:vars]` and host lines.

A host line is a host pattern (ranges like `web[01:20].example.com` allowed, and an
optional `:port`) followed by shell-quoted `key=value` variables. Hosts before the first
section are ungrouped.
"""

from __future__ import annotations

import re
import shlex

from edgectl.errors import ImportFormatError
from edgectl.inventory.formats.ansible_common import (
    ROOT,
    UNGROUPED,
    AnsibleInventory,
    Var,
    expand_hosts,
    split_host_port,
)
from edgectl.inventory.model import Node

SECTION_KINDS = ("hosts", "children", "vars")

_SECTION = re.compile(r"\[(?P<name>[^\]:]+)(?::(?P<kind>[^\]]*))?\]\s*(?:[#;].*)?")


def parse_ansible_ini(text: str, path: str) -> list[Node]:
    """Parse an Ansible INI inventory into nodes, or raise ImportFormatError."""
    inventory = AnsibleInventory(path)
    group, kind = UNGROUPED, "hosts"
    # Ansible refuses `[g:vars]` and `[p:children]` entries naming a group that has no
    # section of its own: such a name is usually a typo, so refuse it as well.
    defined = {ROOT, UNGROUPED}
    vars_sections: list[tuple[str, int]] = []
    child_mentions: list[tuple[str, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            group, kind = _section(line, number, path)
            inventory.group(group, number)
            if kind == "vars":
                vars_sections.append((group, number))
            else:
                defined.add(group)
            continue
        if kind == "hosts":
            _host_line(inventory, group, line, number)
        elif kind == "children":
            child = _single_word(line, number, path)
            inventory.add_child(group, child, number)
            child_mentions.append((child, number))
        else:
            key, value = _assignment(line, number, path)
            inventory.set_group_var(group, key, Var(value, number))
    for child, number in child_mentions:
        if child not in defined:
            raise ImportFormatError(
                path, number, f"group {child!r} is listed as a child but never defined"
            )
    children = {child for child, _ in child_mentions}
    for name, number in vars_sections:
        if name not in defined and name not in children:
            raise ImportFormatError(path, number, f"[{name}:vars] is for a group never defined")
    return inventory.to_nodes()


def _section(line: str, number: int, path: str) -> tuple[str, str]:
    found = _SECTION.fullmatch(line)
    if not found:
        raise ImportFormatError(path, number, f"bad section header {line!r}")
    kind = found.group("kind")
    kind = "hosts" if kind is None else kind.strip()
    if kind not in SECTION_KINDS:
        raise ImportFormatError(
            path,
            number,
            f"unknown section type {kind!r}: use [group], [group:children] or [group:vars]",
        )
    return found.group("name").strip(), kind


def _split(line: str, number: int, path: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise ImportFormatError(path, number, f"cannot split this line: {exc}") from None


def _host_line(inventory: AnsibleInventory, group: str, line: str, number: int) -> None:
    words = _split(line, number, inventory.path)
    if not words:
        return
    pattern, port = split_host_port(words[0])
    host_vars: dict[str, Var] = {}
    if port is not None:
        host_vars["ansible_port"] = Var(port, number)
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise inventory.error(number, f"expected key=value after the host, got {word!r}")
        host_vars[key] = Var(value, number)
    try:
        names = expand_hosts(pattern)
    except ValueError as exc:
        raise inventory.error(number, str(exc)) from None
    for name in names:
        inventory.add_host(group, name, number, host_vars)


def _single_word(line: str, number: int, path: str) -> str:
    words = _split(line, number, path)
    if len(words) != 1:
        raise ImportFormatError(path, number, f"expected one group name, got {line!r}")
    return words[0]


def _assignment(line: str, number: int, path: str) -> tuple[str, str]:
    key, sep, value = line.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise ImportFormatError(path, number, f"expected key=value, got {line!r}")
    if value[:1] in ("'", '"'):
        # a quoted value loses its quotes, as Ansible's literal parsing does
        try:
            words = shlex.split(value)
        except ValueError:
            words = []
        if len(words) == 1:
            value = words[0]
    return key, value
