"""The selector grammar, one pure parser and matcher used by every command.

    selector := term ("," term)*
    term     := ["&" | "!"] atom
    atom     := "all" | "@" group-glob | key op value | name-glob
    op       := "=" | "!=" | "<" | "<=" | ">" | ">="

Plain terms are united; each `&` term intersects and each `!` term subtracts, in any
order. A selector of only `&`/`!` terms starts from every node. `key=value` looks the
key up in the node's labels first, then in its fields (host, user, port, connection),
then in its facts (for example `load<0.5`, `has=tesseract`, `lang=chi_sim`); values of
`=` and `!=` may be globs, values of `<`, `>` compare as numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from edgectl.errors import UsageError
from edgectl.inventory.model import Node

Facts = Mapping[str, Mapping[str, Any]]

_OPERATOR = re.compile(r"(!=|<=|>=|=|<|>)")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_GLOB_TEXT = re.compile(r"[A-Za-z0-9._\-*?\[\]]+")
NODE_FIELD_KEYS = ("name", "host", "user", "port", "connection", "workdir")

# Fact keys a selector may use under a shorter name.
FACT_ALIASES = {
    "load": "load1",
    "mem": "mem_available",
    "disk": "disk_free",
    "temp": "temp_c",
}


@dataclass(frozen=True)
class Atom:
    """One match condition: every node, a name glob, a group glob or a key comparison."""

    kind: str  # "all" | "name" | "group" | "key"
    pattern: str = ""
    key: str = ""
    op: str = ""

    def matches(self, node: Node, facts: Mapping[str, Any]) -> bool:
        """Whether one node (with its facts, maybe empty) meets the condition."""
        if self.kind == "all":
            return True
        if self.kind == "name":
            return fnmatchcase(node.name, self.pattern)
        if self.kind == "group":
            return any(fnmatchcase(g, self.pattern) for g in node.groups)
        return _compare(_lookup(node, facts, self.key), self.op, self.pattern)


@dataclass(frozen=True)
class Term:
    """An atom with how it combines: union, intersect or exclude."""

    mode: str  # "union" | "intersect" | "exclude"
    atom: Atom


@dataclass(frozen=True)
class Selector:
    """A parsed selector; `select` applies it to nodes."""

    text: str
    terms: tuple[Term, ...]

    def select(self, nodes: Iterable[Node], facts: Facts | None = None) -> list[Node]:
        """The nodes the selector picks, in the order given."""
        facts = facts or {}
        unions = [t.atom for t in self.terms if t.mode == "union"]
        intersects = [t.atom for t in self.terms if t.mode == "intersect"]
        excludes = [t.atom for t in self.terms if t.mode == "exclude"]
        chosen = []
        for node in nodes:
            node_facts = facts.get(node.name) or {}
            if unions and not any(a.matches(node, node_facts) for a in unions):
                continue
            if not all(a.matches(node, node_facts) for a in intersects):
                continue
            if any(a.matches(node, node_facts) for a in excludes):
                continue
            chosen.append(node)
        return chosen

    def matches(self, node: Node, facts: Mapping[str, Any] | None = None) -> bool:
        """Whether the selector picks this one node."""
        return bool(self.select([node], {node.name: facts or {}}))


def _error(text: str, why: str) -> UsageError:
    return UsageError(f"invalid selector {text!r}: {why}")


def parse_atom(raw: str, text: str) -> Atom:
    """Parse one term without its prefix."""
    if raw in ("all", "*"):
        return Atom("all")
    if raw.startswith("@"):
        group = raw[1:]
        if not group or not _GLOB_TEXT.fullmatch(group):
            raise _error(text, f"bad group {raw!r} (write @name, globs allowed)")
        return Atom("group", pattern=group)
    found = _OPERATOR.search(raw)
    if found:
        key, op, value = raw[: found.start()].strip(), found.group(1), raw[found.end() :].strip()
        if not _KEY.fullmatch(key):
            raise _error(text, f"bad key {key!r} in {raw!r}")
        if op in ("<", "<=", ">", ">="):
            try:
                float(value)
            except ValueError:
                raise _error(text, f"{raw!r}: {op} needs a number") from None
        return Atom("key", pattern=value, key=key, op=op)
    if not _GLOB_TEXT.fullmatch(raw):
        raise _error(
            text, f"bad name {raw!r} (names use letters, digits, '.', '_', '-'; globs * ? [])"
        )
    return Atom("name", pattern=raw)


def parse_selector(text: str) -> Selector:
    """Parse a selector string; raise UsageError naming the bad term."""
    if not isinstance(text, str) or not text.strip():
        raise _error(str(text), "empty selector (use 'all' for every node)")
    terms = []
    for part in text.split(","):
        raw = part.strip()
        mode = "union"
        if raw[:1] == "&":
            mode, raw = "intersect", raw[1:].strip()
        elif raw[:1] == "!":
            mode, raw = "exclude", raw[1:].strip()
        if not raw:
            raise _error(text, "empty term (two commas, or a lone '&' or '!')")
        terms.append(Term(mode, parse_atom(raw, text)))
    return Selector(text, tuple(terms))


def select(
    text: str | Sequence[str], nodes: Iterable[Node], facts: Facts | None = None
) -> list[Node]:
    """Parse and apply in one call; several selector arguments are united."""
    if not isinstance(text, str):
        text = ",".join(text)
    return parse_selector(text).select(nodes, facts)


def _lookup(node: Node, facts: Mapping[str, Any], key: str) -> Any:
    if key in node.labels:
        return node.labels[key]
    if key in NODE_FIELD_KEYS:
        return getattr(node, key)
    if key == "group":
        return node.groups
    if key == "has":
        return [k for k, v in facts.items() if v not in (None, "", [], False)]
    if key == "lang":
        return facts.get("tesseract_langs") or []
    return facts.get(FACT_ALIASES.get(key, key))


def _compare(actual: Any, op: str, expected: str) -> bool:
    """Compare a looked-up value; a list matches `=` when any member does."""
    if op in ("=", "!="):
        if isinstance(actual, (list, tuple)):
            hit = any(fnmatchcase(str(item), expected) for item in actual)
        else:
            hit = actual is not None and fnmatchcase(_text(actual), expected)
        return hit if op == "=" else not hit
    try:
        number = float(actual)
    except (TypeError, ValueError):
        return False
    limit = float(expected)
    return {
        "<": number < limit,
        "<=": number <= limit,
        ">": number > limit,
        ">=": number >= limit,
    }[op]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
