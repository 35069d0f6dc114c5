"""The node record and the rules every stored value must pass.

These strings later reach shells, file paths and logs, so the rules are strict and
applied at every entry point (CLI, importers, API), not at use.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from edgectl.errors import ValidationError

DEFAULT_PORT = 22
DEFAULT_WORKDIR = "~/.edgectl"
CONNECTIONS = ("ssh", "local")
LOCAL_NODE = "local"
RESERVED_NAMES = frozenset({"all"})  # `all` is the selector for every node

_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}")
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,63}")
_LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LABEL_VALUE = 256
MAX_PATH = 1024


def _show(value: object) -> str:
    """Render a refused value safely for a one-line error (escapes, bounded length)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_name(value: str, what: str = "node name") -> str:
    """Return a valid node or group name, or raise ValidationError saying why not."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
        raise ValidationError(
            f"invalid {what} {_show(value)}: use 1-64 letters, digits, '.', '_' or '-', "
            "not starting with '-'"
        )
    if what == "node name" and value in RESERVED_NAMES:
        raise ValidationError(
            f"invalid node name {value!r}: reserved for the selector of every node"
        )
    return value


def check_host(value: str) -> str:
    """Return a valid hostname or IP address."""
    if isinstance(value, str) and value:
        candidate = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            pass
        if _HOST.fullmatch(value) and ".." not in value:
            return value
    raise ValidationError(
        f"invalid host {_show(value)}: give a hostname (letters, digits, '.', '_', '-', "
        "not starting with '-') or an IP address"
    )


def check_port(value: object) -> int:
    """Return a port number 1-65535 from an int or a decimal string."""
    try:
        port = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ValidationError(f"invalid port {_show(value)}: give a number from 1 to 65535")
    return port


def check_user(value: str) -> str:
    """Return a valid login name."""
    if not isinstance(value, str) or not _USER.fullmatch(value):
        raise ValidationError(
            f"invalid user {_show(value)}: use letters, digits, '.', '_' or '-', not starting with '-'"
        )
    return value


def check_path(value: str, what: str) -> str:
    """Return a path that is safe to store: no control characters, no leading '-'."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_PATH
        or _CONTROL.search(value)
        or value.startswith("-")
    ):
        raise ValidationError(
            f"invalid {what} {_show(value)}: give a path without control characters, "
            "not starting with '-'"
        )
    return value


def check_label(key: str, value: str) -> tuple[str, str]:
    """Return a valid label pair."""
    if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
        raise ValidationError(
            f"invalid label key {_show(key)}: start with a letter or '_', then letters, "
            "digits, '_', '.', '-' (at most 64)"
        )
    if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE or _CONTROL.search(value):
        raise ValidationError(
            f"invalid value for label {key!r}: {_show(value)} (at most {MAX_LABEL_VALUE} "
            "characters, no control characters)"
        )
    return key, value


def parse_label(text: str) -> tuple[str, str]:
    """Parse `key=value` into a checked pair."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValidationError(f"invalid label {_show(text)}: write it as key=value")
    return check_label(key.strip(), value.strip())


@dataclass
class Node:
    """One managed machine: where it is, how to log in, how it is grouped and labelled."""

    name: str
    host: str
    port: int = DEFAULT_PORT
    user: str | None = None
    key: str | None = None
    groups: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    workdir: str = DEFAULT_WORKDIR
    connection: str = "ssh"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field, normalising in place (sorted unique groups, int port)."""
        check_name(self.name)
        self.host = check_host(self.host)
        self.port = check_port(self.port)
        if self.user is not None:
            check_user(self.user)
        if self.key is not None:
            check_path(self.key, "key path")
        check_path(self.workdir, "workdir")
        if self.connection not in CONNECTIONS:
            raise ValidationError(
                f"invalid connection {_show(self.connection)}: use one of {', '.join(CONNECTIONS)}"
            )
        if not isinstance(self.groups, (list, tuple)):
            raise ValidationError(f"invalid groups {_show(self.groups)}: give a list of names")
        self.groups = sorted({check_name(g, "group name") for g in self.groups})
        if not isinstance(self.labels, dict):
            raise ValidationError(f"invalid labels {_show(self.labels)}: give key=value pairs")
        self.labels = dict(sorted(check_label(k, v) for k, v in self.labels.items()))

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape of a node (the `--json` output and the stored record)."""
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key": self.key,
            "groups": list(self.groups),
            "labels": dict(self.labels),
            "workdir": self.workdir,
            "connection": self.connection,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        """Build and validate a node from its dict shape; unknown keys are refused."""
        if not isinstance(data, dict):
            raise ValidationError(f"invalid node record {_show(data)}")
        unknown = set(data) - set(NODE_FIELDS)
        if unknown:
            raise ValidationError(f"unknown node field(s): {', '.join(sorted(unknown))}")
        if "name" not in data or "host" not in data:
            raise ValidationError("a node needs at least 'name' and 'host'")
        values = {k: v for k, v in data.items() if v is not None or k in ("user", "key")}
        return cls(**values)


NODE_FIELDS = ("name", "host", "port", "user", "key", "groups", "labels", "workdir", "connection")
SETTABLE_FIELDS = ("host", "port", "user", "key", "workdir")


def local_node() -> Node:
    """The node every fresh inventory holds: the control machine itself, no SSH."""
    return Node(name=LOCAL_NODE, host="localhost", connection="local")
