"""Reading a step's fields from TOML, with errors that name the field and what was wrong."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

from edgectl.provision.template import TemplateError, check_template

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tabs and newlines are fine in content
_OWNER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,31}")


class FieldError(ValueError):
    """A bad value in one field; the loader adds the file and the step."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return names.get(type(value), type(value).__name__)


class FieldReader:
    """Takes the fields of one TOML table one by one; what is left over is unknown."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = dict(raw)

    def has(self, name: str) -> bool:
        """Whether the field is present (and not yet taken)."""
        return name in self.raw

    def take(self, name: str) -> Any:
        """The raw value of a field (None when absent), removed from the leftovers."""
        return self.raw.pop(name, None)

    def string(
        self,
        name: str,
        default: str | None = None,
        *,
        required: bool = False,
        template: bool = True,
        multiline: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        """A string field; `check` returns an error message or None."""
        value = self.take(name)
        if value is None:
            if required:
                raise FieldError(name, "is required")
            return default
        return check_string(name, value, template=template, multiline=multiline, check=check)

    def strings(
        self,
        name: str,
        *,
        required: bool = False,
        template: bool = True,
        check: Callable[[str], str | None] | None = None,
        value: Any = None,
    ) -> list[str]:
        """An array of strings (a single string is not accepted: say what you mean)."""
        value = self.take(name) if value is None else value
        if value is None:
            if required:
                raise FieldError(name, "is required")
            return []
        if not isinstance(value, list):
            raise FieldError(name, f"must be an array of strings, not {_kind(value)}")
        return [
            check_string(f"{name}[{i}]", item, template=template, check=check)
            for i, item in enumerate(value)
        ]

    def boolean(self, name: str, default: bool) -> bool:
        """A boolean field."""
        value = self.take(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise FieldError(name, f"must be true or false, not {_kind(value)}")
        return value

    def number(self, name: str, default: float | None, low: float, high: float) -> float | None:
        """A number field within [low, high]."""
        value = self.take(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(name, f"must be a number, not {_kind(value)}")
        if not low <= value <= high:
            raise FieldError(name, f"must be between {low:g} and {high:g}, not {value:g}")
        return float(value)

    def mode(self, name: str = "mode") -> int | None:
        """A file mode: an octal string ("0644", "755") or a TOML integer (0o644)."""
        value = self.take(name)
        if value is None:
            return None
        if isinstance(value, bool):
            raise FieldError(name, 'must be an octal string like "0644"')
        if isinstance(value, int):
            mode = value
        elif isinstance(value, str) and re.fullmatch(r"0?[0-7]{3,4}", value.strip()):
            mode = int(value.strip(), 8)
        else:
            raise FieldError(name, f'must be an octal string like "0644", not {value!r}')
        if not 0 <= mode <= 0o7777:
            raise FieldError(name, f"must be at most 07777, not {oct(mode)}")
        return mode

    def owner(self, name: str) -> str | None:
        """A user or group name (no uid:gid syntax, no spaces, no leading '-')."""
        return self.string(name, template=False, check=owner_problem)

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        """A string from a fixed set."""
        allowed = list(choices)
        value = self.string(name, default, template=False)
        assert value is not None
        if value not in allowed:
            raise FieldError(name, f"must be one of {', '.join(allowed)}, not {value!r}")
        return value

    def leftover(self, allowed: Iterable[str]) -> None:
        """Refuse any field not taken, suggesting the closest known one."""
        known = list(allowed)
        for name in self.raw:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FieldError(name, f"unknown field{hint}")


def check_string(
    name: str,
    value: Any,
    *,
    template: bool = True,
    multiline: bool = False,
    check: Callable[[str], str | None] | None = None,
) -> str:
    """Validate one string value: type, control characters, placeholders, own rule."""
    if not isinstance(value, str):
        raise FieldError(name, f"must be a string, not {_kind(value)}")
    if "\x00" in value:
        raise FieldError(name, "must not contain a NUL character")
    if not multiline and ("\n" in value or "\r" in value):
        raise FieldError(name, "must be one line")
    if _CONTROL.search(value):
        raise FieldError(name, "must not contain control characters")
    if template:
        try:
            check_template(value)
        except TemplateError as exc:
            raise FieldError(name, str(exc)) from None
    if check is not None:
        problem = check(value)
        if problem:
            raise FieldError(name, problem)
    return value


def owner_problem(value: str) -> str | None:
    """Why a user or group name is refused, or None."""
    if not _OWNER.fullmatch(value):
        return f"{value!r} is not a user or group name"
    return None


def path_problem(value: str) -> str | None:
    """Why a node path is refused, or None (relative paths start in the node's home)."""
    if not value.strip():
        return "must not be empty"
    if value.startswith("-"):
        return "must not start with '-'"
    return None
