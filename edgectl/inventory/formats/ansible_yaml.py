"""Ansible YAML inventories: `all: {hosts: ..., vars: ..., children: {group: ...}}`.

Each top-level key is a group (usually just `all`); a group holds `hosts` (a mapping of
host patterns to their variables, or null), `vars` and `children`. Lines for errors come
from the YAML node tree, which keeps the position of every key.
"""

from __future__ import annotations

from typing import Any

import yaml

from edgectl.errors import ImportFormatError
from edgectl.inventory.formats.ansible_common import (
    AnsibleInventory,
    Var,
    expand_hosts,
    split_host_port,
)
from edgectl.inventory.model import Node

GROUP_KEYS = ("hosts", "vars", "children")
_MERGE_TAG = "tag:yaml.org,2002:merge"


def parse_ansible_yaml(text: str, path: str) -> list[Node]:
    """Parse an Ansible YAML inventory into nodes, or raise ImportFormatError."""
    data, root = _load(text, path)
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ImportFormatError(path, _line(root), "the top level must be a mapping of groups")
    inventory = AnsibleInventory(path)
    for name, body in data.items():
        value, line = _entry(root, name)
        _group(inventory, str(name), body, value, line, parent=None, trail=())
    return inventory.to_nodes()


def _load(text: str, path: str) -> tuple[Any, yaml.Node | None]:
    """Both the data and its node tree, from one parse."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_duplicate_keys(root, path, set())
        return loader.construct_document(root), root
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise ImportFormatError(path, line, f"YAML syntax error: {detail}") from None
    except yaml.YAMLError as exc:
        raise ImportFormatError(path, None, f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def _check_duplicate_keys(node: yaml.Node, path: str, seen: set[int]) -> None:
    """Refuse a key given twice in one mapping: PyYAML would silently keep the last."""
    if id(node) in seen:  # an alias points back to a node already checked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                line = key.start_mark.line + 1
                if key.value in lines:
                    raise ImportFormatError(
                        path,
                        line,
                        f"duplicate key {key.value!r} (lines {lines[key.value]} and {line})",
                    )
                lines[key.value] = line
            _check_duplicate_keys(value, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, path, seen)


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _entry(node: yaml.Node | None, key: object) -> tuple[yaml.Node | None, int | None]:
    """The value node under `key` of a mapping node, and the line of the key."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
                return value_node, key_node.start_mark.line + 1
    return None, _line(node)


def _group(
    inventory: AnsibleInventory,
    name: str,
    body: object,
    node: yaml.Node | None,
    line: int | None,
    parent: str | None,
    trail: tuple[str, ...],
) -> None:
    if name in trail:
        # a YAML alias can nest a group inside itself; stop before recursing for ever
        loop = " -> ".join([*trail[trail.index(name) :], name])
        raise inventory.error(line, f"cycle in group children: {loop}")
    inventory.group(name, line)
    if parent is not None:
        inventory.add_child(parent, name, line)
    if body is None:
        return
    if not isinstance(body, dict):
        raise inventory.error(line, f"group {name!r} must be a mapping of hosts, vars, children")
    for key in body:
        if key not in GROUP_KEYS:
            raise inventory.error(
                _entry(node, key)[1],
                f"unknown key {key!r} in group {name!r}: use {', '.join(GROUP_KEYS)}",
            )
    hosts_node, hosts_line = _entry(node, "hosts")
    for pattern, host_vars in _mapping(inventory, body.get("hosts"), "hosts", hosts_line):
        _hosts(inventory, name, str(pattern), host_vars, hosts_node)
    vars_node, vars_line = _entry(node, "vars")
    for key, value in _mapping(inventory, body.get("vars"), "vars", vars_line):
        inventory.set_group_var(name, str(key), Var(value, _entry(vars_node, key)[1]))
    children_node, children_line = _entry(node, "children")
    for child, child_body in _mapping(inventory, body.get("children"), "children", children_line):
        child_node, child_line = _entry(children_node, child)
        _group(inventory, str(child), child_body, child_node, child_line, name, (*trail, name))


def _mapping(
    inventory: AnsibleInventory, value: object, what: str, line: int | None
) -> list[tuple[Any, Any]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise inventory.error(line, f"{what!r} must be a mapping")
    return list(value.items())


def _hosts(
    inventory: AnsibleInventory,
    group: str,
    pattern: str,
    host_vars: object,
    hosts_node: yaml.Node | None,
) -> None:
    vars_node, line = _entry(hosts_node, pattern)
    if host_vars is not None and not isinstance(host_vars, dict):
        raise inventory.error(line, f"the variables of host {pattern!r} must be a mapping")
    located = {
        str(key): Var(value, _entry(vars_node, key)[1]) for key, value in (host_vars or {}).items()
    }
    pattern, port = split_host_port(pattern)
    if port is not None:
        located.setdefault("ansible_port", Var(port, line))
    try:
        names = expand_hosts(pattern)
    except ValueError as exc:
        raise inventory.error(line, str(exc)) from None
    for name in names:
        inventory.add_host(group, name, line, located, repeat_ok=True)
