"""Inventory importers and exporters: pure functions from text to nodes and back.

Import formats: edgectl TOML, CSV, Ansible inventories (INI or YAML), OpenSSH client
config and JSON. Export formats: TOML, CSV and JSON, each of which reads back to the same
nodes. Every error is an ImportFormatError naming the file and, wherever known, the line;
a file either imports completely or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable

from edgectl.errors import ImportFormatError, ValidationError
from edgectl.inventory.formats.ansible_ini import parse_ansible_ini
from edgectl.inventory.formats.ansible_yaml import parse_ansible_yaml
from edgectl.inventory.formats.csvfile import COLUMNS, dump_csv, parse_csv
from edgectl.inventory.formats.jsonfile import dump_json, parse_json
from edgectl.inventory.formats.ssh_config import parse_ssh_config
from edgectl.inventory.formats.toml import dump_toml, looks_like_toml, parse_toml
from edgectl.inventory.model import Node, check_name

__all__ = [
    "EXPORT_FORMATS",
    "FORMATS",
    "detect_format",
    "dump_nodes",
    "load_nodes",
    "parse_text",
]

FORMATS = ("toml", "csv", "ansible", "ssh-config", "json")
EXPORT_FORMATS = ("toml", "csv", "json")

_BY_EXTENSION = {
    ".toml": "toml",
    ".csv": "csv",
    ".json": "json",
    ".yml": "ansible",
    ".yaml": "ansible",
    ".ini": "ansible",
}
_SSH_CONFIG_NAMES = ("config", "ssh_config")
_SSH_KEYWORD = re.compile(r"\s*(host|match|include)(\s|=)", re.IGNORECASE)
_INI_SECTION = re.compile(r"\s*\[[^\]]+\]\s*([#;].*)?")
_INI_HOST_VARS = re.compile(r"\s*\S+(\s+[A-Za-z_][\w.]*=\S*)+\s*")
_YAML_KEY = re.compile(r"[A-Za-z0-9_.-]+:(\s.*)?")
_COMMENT = ("#", ";")

_PARSERS: dict[str, Callable[[str, str], list[Node]]] = {
    "toml": parse_toml,
    "csv": parse_csv,
    "ssh-config": parse_ssh_config,
    "json": parse_json,
}
_DUMPERS: dict[str, Callable[[list[Node]], str]] = {
    "toml": dump_toml,
    "csv": dump_csv,
    "json": dump_json,
}


def detect_format(path: str, text: str) -> str:
    """Guess the import format of a file from its name, else from its content."""
    extension = os.path.splitext(path)[1].lower()
    if extension in _BY_EXTENSION:
        return _BY_EXTENSION[extension]
    if os.path.basename(path) in _SSH_CONFIG_NAMES:
        return "ssh-config"
    found = _sniff(text.lstrip("\ufeff"))
    if found is None:
        raise ImportFormatError(
            path, None, f"cannot tell the format of this file: give one of {', '.join(FORMATS)}"
        )
    return found


def _sniff(text: str) -> str | None:
    """Recognise a format by its content; the checks go from most to least specific."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            json.loads(stripped)
            return "json"
        except ValueError:
            pass
    if looks_like_toml(text):
        return "toml"
    lines = [line for line in text.splitlines() if line.strip() and line.lstrip()[0] not in "#;"]
    if not lines:
        return None
    if any(_SSH_KEYWORD.match(line) for line in lines):
        return "ssh-config"
    header = [cell.strip().lower() for cell in lines[0].split(",")]
    if len(header) > 1 and "name" in header and set(header) <= set(COLUMNS):
        return "csv"
    if lines[0].strip() == "---" or _YAML_KEY.fullmatch(lines[0].strip()):
        return "ansible"
    if any(_INI_SECTION.fullmatch(line) or _INI_HOST_VARS.fullmatch(line) for line in lines):
        return "ansible"
    return None


def parse_text(
    text: str, format: str, path: str = "<text>", group: str | None = None
) -> list[Node]:
    """Parse inventory text in `format` ("auto" sniffs it) into nodes; `path` names it in errors."""
    text = text.lstrip("\ufeff")  # a byte-order mark (spreadsheet exports) is not content
    if format == "auto":
        format = detect_format(path, text)
    if format == "ansible":
        nodes = _parse_ansible(text, path)
    elif format in _PARSERS:
        nodes = _PARSERS[format](text, path)
    else:
        raise ImportFormatError(
            path, None, f"unknown format {format!r}: use one of {', '.join(FORMATS)}"
        )
    return _add_group(nodes, group, path) if group is not None else nodes


def _parse_ansible(text: str, path: str) -> list[Node]:
    """Ansible inventories come as INI or YAML; the extension, else the content, decides."""
    extension = os.path.splitext(path)[1].lower()
    if extension in (".yml", ".yaml"):
        return parse_ansible_yaml(text, path)
    if extension == ".ini":
        return parse_ansible_ini(text, path)
    lines = [line.strip() for line in text.splitlines()]
    first = next((line for line in lines if line and line[0] not in "#;"), "")
    if first == "---" or _YAML_KEY.fullmatch(first):
        return parse_ansible_yaml(text, path)
    return parse_ansible_ini(text, path)


def _add_group(nodes: list[Node], group: str, path: str) -> list[Node]:
    try:
        check_name(group, "group name")
    except ValidationError as exc:
        raise ImportFormatError(path, None, exc.message) from None
    return [dataclasses.replace(node, groups=[*node.groups, group]) for node in nodes]


def load_nodes(path: str, format: str = "auto", group: str | None = None) -> list[Node]:
    """Read an inventory file (UTF-8) and return all its nodes, or raise ImportFormatError."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ImportFormatError(path, None, f"cannot read file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFormatError(path, line, "not UTF-8 text") from None
    return parse_text(text, format, path, group)


def dump_nodes(nodes: list[Node], format: str) -> str:
    """Render nodes in an export format (toml, csv or json) that imports back unchanged."""
    dumper = _DUMPERS.get(format)
    if dumper is None:
        raise ValidationError(
            f"cannot export as {format!r}: use one of {', '.join(EXPORT_FORMATS)}"
        )
    return dumper(nodes)
