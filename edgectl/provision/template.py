"""`${name}` substitution, string.Template-style: values are looked up, never evaluated.

Only `${name}` is edgectl's; `$${` writes a literal `${`, and any other `$` is left alone so
that shell commands keep their `$HOME` and `$1`. Substitution is one pass: a value that
itself contains `${...}` is not expanded again. In shell commands every value is quoted
(by the transport's quote_argv) so it reaches the command as one word, whatever it holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from edgectl.transport.quoting import quote_argv

NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_TOKEN = re.compile(r"\$\$\{|\$\{(" + NAME + r")\}|\$\{")
_WHOLE = re.compile(r"\$\{(" + NAME + r")\}")


class TemplateError(ValueError):
    """A malformed placeholder, or a name with no value."""


def _scalar(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TemplateError(f"${{{name}}} has no text value ({type(value).__name__})")


def _words(value: Any, name: str) -> list[str]:
    """A value as a list of words: a list gives one word per item."""
    if value is None:
        raise TemplateError(f"${{{name}}} has no value on this node")
    if isinstance(value, (list, tuple)):
        return [_scalar(item, name) for item in value]
    return [_scalar(value, name)]


def check_template(text: str) -> None:
    """Raise TemplateError for a `${` that does not open a valid `${name}`."""
    for found in _TOKEN.finditer(text):
        if found.group(0) == "${":
            tail = text[found.start() : found.start() + 30]
            raise TemplateError(
                f"malformed placeholder near {tail!r}: write ${{name}} "
                "(letters, digits, '_', '.', '-'), or $${ for a literal ${"
            )


def references(text: str) -> list[str]:
    """The names a template refers to, in order of first use."""
    names: list[str] = []
    for found in _TOKEN.finditer(text):
        name = found.group(1)
        if name and name not in names:
            names.append(name)
    return names


def _substitute(text: str, variables: Mapping[str, Any], shell: bool) -> str:
    check_template(text)

    def replace(found: re.Match[str]) -> str:
        if found.group(0) == "$${":
            return "${"
        name = found.group(1)
        if name not in variables:
            raise TemplateError(f"undefined variable ${{{name}}} (not in vars, labels or facts)")
        words = _words(variables[name], name)
        if shell:
            return quote_argv(words) if words else ""
        return " ".join(words)

    return _TOKEN.sub(replace, text)


def render_text(text: str, variables: Mapping[str, Any]) -> str:
    """Substitute values as plain text (file contents, paths, single arguments)."""
    return _substitute(text, variables, shell=False)


def render_shell(text: str, variables: Mapping[str, Any]) -> str:
    """Substitute values into a shell command line, each value quoted as one word."""
    return _substitute(text, variables, shell=True)


def render_argv(argv: Sequence[str], variables: Mapping[str, Any]) -> list[str]:
    """Substitute in each argument; an argument that is exactly `${list}` becomes its items."""
    result: list[str] = []
    for arg in argv:
        whole = _WHOLE.fullmatch(arg)
        if whole and whole.group(1) in variables:
            result.extend(_words(variables[whole.group(1)], whole.group(1)))
        else:
            result.append(render_text(arg, variables))
    return result
