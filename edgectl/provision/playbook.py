"""Playbooks: TOML files of steps, validated up front with errors naming file, step and field.

    name = "ocr"
    description = "Tesseract OCR runtime"
    [vars]
    langs = ["eng", "chi_sim"]
    [[steps]]
    name = "tesseract"
    apt = ["tesseract-ocr", "tesseract-ocr-eng"]
    become = true

A step takes exactly one action (the key naming it holds its main value), that action's
options, and the common fields `name`, `when` (a selector), `become` and `timeout`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.errors import NotFoundError, UsageError
from edgectl.inventory.selectors import Selector, parse_selector
from edgectl.provision.actions import ACTIONS
from edgectl.provision.fields import FieldError, FieldReader, check_string

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "playbooks"
TOP_FIELDS = ("name", "description", "vars", "steps")
COMMON_FIELDS = ("name", "when", "become", "timeout")
MAX_STEPS = 1000
MAX_PLAYBOOK_BYTES = 4 * 1024 * 1024
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PLAYBOOK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class PlaybookError(UsageError):
    """A playbook that cannot be used; the message names the file, the step and the field."""


@dataclass(frozen=True)
class Step:
    """One validated step: its action and arguments, and when and how it runs."""

    index: int  # 1-based position in the playbook
    name: str
    action: str
    args: Any  # the action's own arguments dataclass
    when: Selector | None = None
    become: bool = False
    timeout: float | None = None

    @property
    def when_text(self) -> str | None:
        """The `when` selector as written."""
        return self.when.text if self.when is not None else None


@dataclass(frozen=True)
class Playbook:
    """A validated playbook."""

    name: str
    description: str
    path: Path
    vars: dict[str, Any]
    steps: tuple[Step, ...]


def _where(path: Path, index: int | None = None, name: str | None = None) -> str:
    if index is None:
        return str(path)
    return f"{path}: step {index}" + (f" ({name!r})" if name else "")


def _check_var(name: str, value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)):
        if isinstance(value, str):
            check_string(f"vars.{name}", value, template=False, multiline=True)
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, (str, int, float, bool)):
                raise FieldError(f"vars.{name}[{i}]", "items must be strings, numbers or booleans")
            if isinstance(item, str):
                check_string(f"vars.{name}[{i}]", item, template=False)
        return list(value)
    raise FieldError(f"vars.{name}", "must be a string, number, boolean or array of them")


def _parse_vars(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FieldError("vars", "must be a table ([vars])")
    values = {}
    for name, value in raw.items():
        if not _VAR_NAME.fullmatch(name):
            raise FieldError(f"vars.{name}", "variable names are letters, digits and '_'")
        values[name] = _check_var(name, value)
    return values


def _parse_step(raw: Any, index: int, base: Path) -> Step:
    if not isinstance(raw, dict):
        raise FieldError("steps", "each [[steps]] entry must be a table")
    fields = FieldReader(raw)
    chosen = [key for key in raw if key in ACTIONS]
    if len(chosen) != 1:
        known = ", ".join(ACTIONS)
        if not chosen:
            raise FieldError("action", f"no action: give exactly one of {known}")
        raise FieldError(chosen[1], f"a step takes one action, got {' and '.join(chosen)}")
    action = ACTIONS[chosen[0]]
    name = fields.string("name", f"{action.name}-{index}", template=False)
    assert name is not None
    if not name.strip() or len(name) > 64:
        raise FieldError("name", "must be 1 to 64 characters")
    when_text = fields.string("when", template=False)
    when = None
    if when_text is not None:
        try:
            when = parse_selector(when_text)
        except UsageError as exc:
            raise FieldError("when", str(exc)) from None
    become = fields.boolean("become", False)
    timeout = fields.number("timeout", None, 1, 7 * 86400)
    args = action.parse(fields.take(action.name), fields, base)
    fields.leftover((*COMMON_FIELDS, action.name, *action.options))
    return Step(index, name, action.name, args, when, become, timeout)


def parse_playbook(text: str, path: Path) -> Playbook:
    """Validate a playbook's TOML text; `src` and `python` files are found beside path."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlaybookError(f"{path}: invalid TOML: {exc}") from None
    base = path.parent
    top = FieldReader(data)
    try:
        name = top.string("name", path.stem, template=False)
        assert name is not None
        if not _PLAYBOOK_NAME.fullmatch(name):
            raise FieldError("name", f"{name!r}: use letters, digits, '_', '.', '-'")
        description = top.string("description", "", template=False, multiline=True) or ""
        variables = _parse_vars(top.take("vars"))
        raw_steps = top.take("steps")
        top.leftover(TOP_FIELDS)
    except FieldError as exc:
        raise PlaybookError(f"{path}: field {exc.field!r}: {exc.message}") from None
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PlaybookError(f"{path}: field 'steps': give at least one [[steps]] table")
    if len(raw_steps) > MAX_STEPS:
        raise PlaybookError(f"{path}: field 'steps': at most {MAX_STEPS} steps")
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_steps, start=1):
        label = raw.get("name") if isinstance(raw, dict) else None
        shown = label if isinstance(label, str) else None
        try:
            step = _parse_step(raw, index, base)
        except FieldError as exc:
            raise PlaybookError(
                f"{_where(path, index, shown)}: field {exc.field!r}: {exc.message}"
            ) from None
        if step.name in seen:
            raise PlaybookError(
                f"{_where(path, index, shown)}: field 'name': {step.name!r} is also "
                f"the name of step {seen[step.name]}"
            )
        seen[step.name] = index
        steps.append(step)
    return Playbook(name, description, path, variables, tuple(steps))


def shipped_playbooks() -> list[str]:
    """The names of the playbooks that ship with edgectl."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))


def find_playbook(spec: str) -> Path:
    """A playbook path: spec itself when it is a file, else a shipped playbook's name."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if _PLAYBOOK_NAME.fullmatch(spec) and "/" not in spec:
        shipped = SHIPPED_DIR / f"{spec.removesuffix('.toml')}.toml"
        if shipped.is_file():
            return shipped
    names = ", ".join(shipped_playbooks()) or "none"
    raise NotFoundError(f"no playbook {spec!r}: not a file, nor a shipped playbook ({names})")


def load_playbook(spec: str | Path) -> Playbook:
    """Find (path or shipped name), read and validate a playbook."""
    path = find_playbook(str(spec))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PlaybookError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_PLAYBOOK_BYTES:
        raise PlaybookError(f"{path}: over {MAX_PLAYBOOK_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PlaybookError(f"{path}: not UTF-8 text") from None
    return parse_playbook(text, path)
