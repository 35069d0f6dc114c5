"""The data an action works on: commands to run, a check's output, and the plan it makes.

Actions are pure: from a step and a node's context they name one check command, and from
the check's output they make a Plan (the commands that bring the node to the wanted state,
or nothing). Only the runner runs commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgectl.transport.quoting import quote_argv

SHOWN_COMMAND = 120  # characters of a command line kept in messages


@dataclass(frozen=True)
class Command:
    """One command for a node: argv (quoted by the transport), maybe stdin, maybe as root."""

    argv: tuple[str, ...]
    stdin: bytes | None = None
    become: bool = False  # run under `sudo -n` unless the login user is root
    slow: bool = False  # may take minutes (package installs): gets the long timeout

    def shown(self) -> str:
        """The command line for messages, cut to a readable length."""
        text = quote_argv(self.argv)
        return text if len(text) <= SHOWN_COMMAND else text[: SHOWN_COMMAND - 3] + "..."


@dataclass(frozen=True)
class Output:
    """What a command left: exit status (None when killed or cut off), stdout, stderr."""

    exit_status: int | None
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_status == 0

    @property
    def text(self) -> str:
        """stdout as text (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", errors="replace")

    def why(self, lines: int = 3) -> str:
        """The last lines of stderr (else stdout), for a failure message."""
        for stream in (self.stderr, self.stdout):
            text = stream.decode("utf-8", errors="replace")
            kept = [line.strip()[:200] for line in text.splitlines() if line.strip()]
            if kept:
                return " / ".join(kept[-lines:])
        return "no output"


@dataclass
class Plan:
    """What a step would do on one node: nothing, some commands, a skip or a failure."""

    commands: list[Command] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # one line per change, for people
    note: str = ""  # why nothing is to be done, or a detail worth showing
    diff: str | None = None  # a unified diff of a file's content, when it changes
    skip: str | None = None  # the step does not apply to this node, and why
    fail: str | None = None  # the step cannot be done on this node, and why

    @classmethod
    def ok(cls, note: str = "") -> Plan:
        """Nothing to change."""
        return cls(note=note)

    @classmethod
    def skipped(cls, why: str) -> Plan:
        """The step does not apply here."""
        return cls(skip=why)

    @classmethod
    def failed(cls, why: str) -> Plan:
        """The step cannot be done here."""
        return cls(fail=why)

    @property
    def status(self) -> str:
        """'failed', 'skipped', 'changed' (commands to run) or 'ok'."""
        if self.fail is not None:
            return "failed"
        if self.skip is not None:
            return "skipped"
        return "changed" if self.commands else "ok"


def sh(script: str, *args: str) -> tuple[str, ...]:
    """argv running a fixed POSIX-sh script with values as its positional parameters."""
    return ("sh", "-c", script, "edgectl", *args)


def parse_key_values(text: str) -> dict[str, str]:
    """`key=value` lines into a dict (first value of a key wins; other lines ignored)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and key not in values:
            values[key] = value
    return values
