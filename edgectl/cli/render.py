"""All output formatting: rich tables on a terminal, plain columns in pipes, JSON for scripts.

rich is imported here only, and only when a terminal table is drawn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from edgectl.cli.context import Environment

# Control characters other than tab and newline: in text from a node (an error, a name, a
# fact) they could move the cursor, retitle the window or hide a line on a terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """Text safe to print: control characters shown as escapes (\\x1b), never sent raw."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def emit_json(env: Environment, document: Any) -> None:
    """Print one JSON document on stdout and nothing else: indented for a person, compact for a pipe.

    The compact form also takes the stdlib's C encoder (indenting falls back to pure Python,
    several times slower on a 10,000-node inventory).
    """
    if env.stdout_isatty:
        text = json.dumps(document, indent=2, ensure_ascii=False)
    else:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    env.stdout.write(text + "\n")


def line(env: Environment, text: str = "") -> None:
    """Print one line on stdout."""
    env.stdout.write(text + "\n")


def note(env: Environment, text: str) -> None:
    """A message for a person, on stderr so that stdout stays clean for pipes."""
    env.stderr.write(plain(text) + "\n")


def error(env: Environment, text: str) -> None:
    """The one line a failing command prints."""
    first = text.strip().splitlines()[0] if text.strip() else "failed"
    env.stderr.write(f"edgectl: error: {plain(first)}\n")


def table(
    env: Environment,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    title: str | None = None,
) -> None:
    """A table: drawn by rich on a terminal, aligned plain columns otherwise (never truncated)."""
    cells = [["" if v is None else plain(str(v)) for v in row] for row in rows]
    if env.stdout_isatty:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console(
            file=env.stdout, no_color=not env.colour, highlight=False, force_terminal=True
        )
        grid = Table(
            title=title, header_style="bold" if env.colour else None, box=None, pad_edge=False
        )
        for header in headers:
            grid.add_column(header, overflow="fold")
        for row in cells:
            # Text, not str: a cell is data, never rich markup ("[/x]" in a node's error).
            grid.add_row(*(Text(cell) for cell in row))
        console.print(grid)
        return
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [list(headers), *cells]:
        env.stdout.write(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def key_values(env: Environment, pairs: Sequence[tuple[str, Any]]) -> None:
    """`key: value` lines, aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        shown = "-" if value in (None, "", [], {}) else value
        env.stdout.write(f"{key.ljust(width)}  {plain(str(shown))}\n")


@contextmanager
def _rich_bar(env: Environment, label: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A transient rich bar on stderr; yields its `update(**fields)`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=env.stderr, no_color=not env.colour, force_terminal=True)
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda **fields: bar.update(task, **fields)


def progress_factory(
    env: Environment, label: str, threshold: int = 5
) -> Callable[[int], AbstractContextManager[Callable[[str], None]]] | None:
    """A progress bar on stderr for fan-out over more than a handful of nodes, on a terminal only."""
    if not env.stderr_isatty:
        return None

    @contextmanager
    def bar(total: int) -> Iterator[Callable[[str], None]]:
        if total <= threshold:
            yield lambda name: None
            return
        with _rich_bar(env, label, total) as update:
            yield lambda name: update(advance=1)

    return bar


@contextmanager
def count_progress(env: Environment, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A bar fed with (done, total), on a terminal only; yields None for scripts."""
    if not env.stderr_isatty:
        yield None
        return
    with _rich_bar(env, label, None) as update:
        yield lambda done, total: update(completed=done, total=total)
