"""OpenSSH client config files: every concrete alias on a `Host` line becomes a node.

Options resolve as ssh does: blocks are walked in file order and, for each block whose
`Host` patterns match the alias (`*`, `?` wildcards, `!` negation, case-insensitive), the
first value seen for an option wins, so `Host *` at the end gives defaults. Used options:
HostName (`%h` is the alias), Port, User and the first IdentityFile (`~` kept as written);
other keywords are ignored. An alias on several `Host` lines is one node.

`Include` is followed relative to the including file's directory, with glob patterns, at
most 8 levels deep. `Match` blocks are skipped: their conditions depend on the moment
ssh runs (local user, exec, canonical names), so their options are not applied.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

from edgectl.errors import ImportFormatError, ValidationError
from edgectl.inventory.formats.common import build_node
from edgectl.inventory.model import Node, check_host, check_name, check_path, check_port, check_user

MAX_INCLUDE_DEPTH = 8
OPTIONS = ("hostname", "port", "user", "identityfile")

_KEYWORD = re.compile(r"(?P<keyword>[^\s=]+)\s*(?:=\s*)?(?P<rest>.*)")
_TOKEN = re.compile(r"%(.)")


@dataclass
class _Option:
    value: str
    path: str
    line: int


@dataclass
class _Block:
    """Options that apply when every pattern list in `conditions` matches the alias."""

    conditions: list[list[str]]
    skipped: bool = False
    options: dict[str, _Option] = field(default_factory=dict)


@dataclass
class _Alias:
    name: str
    path: str
    line: int


class _Reader:
    """Flattens a config and its includes into blocks in the order ssh would read them."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []
        self.aliases: dict[str, _Alias] = {}

    def read(self, text: str, path: str, guard: list[list[str]], depth: int) -> None:
        block = self._start(_Block(list(guard)))
        for number, raw in enumerate(text.splitlines(), start=1):
            parsed = _keyword_line(raw, path, number)
            if parsed is None:
                continue
            keyword, args = parsed
            if keyword == "host":
                if not args:
                    raise ImportFormatError(path, number, "Host needs at least one pattern")
                block = self._start(_Block([*guard, args]))
                for pattern in args:
                    if not any(c in pattern for c in "*?!"):
                        self.aliases.setdefault(pattern, _Alias(pattern, path, number))
            elif keyword == "match":
                block = self._start(_Block(list(guard), skipped=True))
            elif block.skipped:
                continue
            elif keyword == "include":
                self._include(args, path, number, block, depth)
                # what follows the Include still belongs to the enclosing block, after it
                block = self._start(_Block(list(block.conditions)))
            elif keyword in OPTIONS:
                if not args:
                    raise ImportFormatError(path, number, f"{keyword} needs a value")
                block.options.setdefault(keyword, _Option(args[0], path, number))

    def _start(self, block: _Block) -> _Block:
        self.blocks.append(block)
        return block

    def _include(self, args: list[str], path: str, number: int, block: _Block, depth: int) -> None:
        if not args:
            raise ImportFormatError(path, number, "Include needs a file name")
        if depth >= MAX_INCLUDE_DEPTH:
            raise ImportFormatError(
                path, number, f"Include nested more than {MAX_INCLUDE_DEPTH} deep (a loop?)"
            )
        for arg in args:
            pattern = os.path.expanduser(arg)
            if not os.path.isabs(pattern):
                pattern = os.path.join(os.path.dirname(path), pattern)
            # like ssh, a pattern matching no file is not an error
            for included in sorted(glob.glob(pattern)):
                try:
                    with open(included, encoding="utf-8") as handle:
                        text = handle.read()
                except (OSError, UnicodeDecodeError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                    raise ImportFormatError(
                        path, number, f"cannot read included file {included}: {reason}"
                    ) from None
                self.read(text, included, block.conditions, depth + 1)

    def resolve(self, alias: str) -> dict[str, _Option]:
        """The options ssh would use for `alias`: the first value of each wins."""
        found: dict[str, _Option] = {}
        for block in self.blocks:
            if not block.skipped and all(_matches(alias, p) for p in block.conditions):
                for keyword, option in block.options.items():
                    found.setdefault(keyword, option)
        return found


def parse_ssh_config(text: str, path: str) -> list[Node]:
    """Parse an OpenSSH client config (and its includes) into nodes."""
    reader = _Reader()
    reader.read(text, path, [], 0)
    return [_node(alias, reader.resolve(alias.name)) for alias in reader.aliases.values()]


def _node(alias: _Alias, options: dict[str, _Option]) -> Node:
    try:
        check_name(alias.name)
    except ValidationError as exc:
        raise ImportFormatError(alias.path, alias.line, exc.message) from None
    fields: dict[str, object] = {"name": alias.name, "host": alias.name}
    for keyword, option in options.items():
        try:
            if keyword == "hostname":
                fields["host"] = check_host(_substitute(option.value, alias.name))
            elif keyword == "port":
                fields["port"] = check_port(option.value)
            elif keyword == "user":
                fields["user"] = check_user(option.value)
            elif option.value.lower() != "none":  # IdentityFile none: no key file
                fields["key"] = check_path(option.value, "key path")
        except ValidationError as exc:
            raise ImportFormatError(
                option.path, option.line, f"host {alias.name!r}: {exc.message}"
            ) from None
    return build_node(alias.path, alias.line, **fields)


def _substitute(value: str, alias: str) -> str:
    """Expand `%h` (the alias) and `%%`; other tokens stay and fail the host check."""
    return _TOKEN.sub(
        lambda m: alias if m.group(1) == "h" else "%" if m.group(1) == "%" else m.group(0), value
    )


def _matches(alias: str, patterns: list[str]) -> bool:
    """ssh's Host rule: no negated pattern may match, and some plain pattern must."""
    name = alias.lower()
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _wildcard(pattern[1:]).fullmatch(name):
                return False
        elif _wildcard(pattern).fullmatch(name):
            matched = True
    return matched


def _wildcard(pattern: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()]
    return re.compile("".join(parts), re.DOTALL)


def _keyword_line(raw: str, path: str, number: int) -> tuple[str, list[str]] | None:
    """(lowercased keyword, arguments) of a config line, or None for blanks and comments."""
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    found = _KEYWORD.fullmatch(line)
    if not found:
        raise ImportFormatError(path, number, f"cannot read this line: {line!r}")
    try:
        return found.group("keyword").lower(), _words(found.group("rest"))
    except ValueError as exc:
        raise ImportFormatError(path, number, str(exc)) from None


def _words(text: str) -> list[str]:
    """Split arguments like ssh: whitespace, "double" or 'single' quotes, `#` comments."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    in_word = False
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if quote:
            if char == quote:
                quote = ""
            else:
                current.append(char)
        elif char in " \t":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        elif char == "#" and not in_word:
            break  # a comment starts only where a word could
        elif char in "\"'":
            quote, in_word = char, True
        elif char == "\\" and index < len(text) and text[index] in "\"'\\ ":
            current.append(text[index])
            index += 1
            in_word = True
        else:
            current.append(char)
            in_word = True
    if quote:
        raise ValueError(f"unclosed {quote} quote")
    if in_word:
        words.append("".join(current))
    return words
