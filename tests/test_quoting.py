"""quote_argv: the one place a remote command line is built. No server needed."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from edgectl.transport.quoting import quote_argv

HOSTILE = [
    "; rm -rf /",
    "$(id)",
    "`id`",
    "a && b || c",
    "| cat",
    "> /tmp/x",
    "< /etc/passwd",
    "'single'",
    '"double"',
    "it's",
    "two  spaces",
    "-n",
    "--help",
    "$HOME ${PATH} $((1+1))",
    "*",
    "?",
    "~",
    "back\\slash",
    "line\nbreak",
    "tab\there",
    "",
    "ünïcödé ✓",
    "#comment",
    "!history",
    "{a,b}",
]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ls"], "ls"),
        (["echo", "a b"], "echo 'a b'"),
        (["echo", ""], "echo ''"),
        (["echo", "it's"], "echo 'it'\"'\"'s'"),
        (["printf", "%s\\n", "$(id)"], "printf '%s\\n' '$(id)'"),
        (["rm", "--", "-rf"], "rm -- -rf"),
        (["cat", "/path/with-safe_chars.txt"], "cat /path/with-safe_chars.txt"),
    ],
)
def test_quote_argv_quotes_only_what_needs_it(argv: list[str], expected: str) -> None:
    assert quote_argv(argv) == expected


@pytest.mark.parametrize("arg", HOSTILE)
def test_quoted_arguments_split_back_to_the_same_argv(arg: str) -> None:
    argv = ["printf", "%s", arg, "tail"]
    assert shlex.split(quote_argv(argv)) == argv


def test_a_posix_shell_sees_exactly_the_arguments() -> None:
    command = quote_argv(["printf", "%s\\0", *HOSTILE])
    done = subprocess.run(["sh", "-c", command], capture_output=True, timeout=10, check=True)
    assert done.stdout.decode().split("\0")[:-1] == HOSTILE


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        ("ls -l", TypeError),  # a string, not a list of arguments
        ([], ValueError),
        (["echo", b"bytes"], TypeError),
        (["echo", 3], TypeError),
        (["echo", "nul\x00byte"], ValueError),
    ],
)
def test_quote_argv_refuses_what_cannot_be_quoted(argv: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        quote_argv(argv)  # type: ignore[arg-type]
