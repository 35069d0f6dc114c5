"""`pip`: Python packages in a virtualenv on the node (default `${workdir}/venv`).

The check asks the venv's own python which distributions it has (importlib.metadata), so
nothing is downloaded when everything is there. Requirements are `name`, `name[extra]` and
at most one version clause (`==`, `!=`, `>=`, `<=`, `>`, `<`, `~=`; `==1.2.*` too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.provision.actions.base import Action, check_failed
from edgectl.provision.context import NodeContext
from edgectl.provision.fields import FieldError, FieldReader, path_problem
from edgectl.provision.plan import Command, Output, Plan, sh
from edgectl.provision.template import render_text

if TYPE_CHECKING:
    from edgectl.provision.playbook import Step

_REQUIREMENT = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?P<extras>\[[A-Za-z0-9._,-]+\])?"
    r"\s*(?:(?P<op>==|!=|>=|<=|~=|>|<)\s*(?P<version>[0-9][A-Za-z0-9.*+!-]*))?"
)
_PYTHON = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9._/-]*")  # a command or a path, no option
DEFAULT_VENV = "${workdir}/venv"

CHECK_SCRIPT = r"""
v=$1; shift
if [ ! -x "$v/bin/python" ]; then echo "venv=missing"; exit 0; fi
echo "venv=present"
[ "$#" -gt 0 ] || exit 0
exec "$v/bin/python" -c '
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print("have\t" + name + "\t" + metadata.version(name))
    except metadata.PackageNotFoundError:
        print("missing\t" + name)
' "$@"
"""


@dataclass(frozen=True)
class Requirement:
    """One parsed requirement."""

    text: str
    name: str
    op: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class PipArgs:
    """Requirements, where the venv lives, which python makes it, and how."""

    requirements: tuple[Requirement, ...]
    venv: str
    python: str
    system_site_packages: bool


def parse_requirement(text: str) -> Requirement:
    """Parse one requirement string, or raise ValueError saying what is supported."""
    found = _REQUIREMENT.fullmatch(text.strip())
    if not found:
        raise ValueError(
            f"{text!r} is not a requirement edgectl understands: write name, name[extra] "
            "or name with one clause such as >=1.2"
        )
    return Requirement(text.strip(), found.group("name"), found.group("op"), found.group("version"))


def _release(version: str) -> tuple[int, ...]:
    """The leading numeric release segments of a version (1.10.2rc1 -> (1, 10, 2))."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group(0)))
        if digits.group(0) != piece:
            break
    return tuple(parts)


def _cmp(left: tuple[int, ...], right: tuple[int, ...]) -> int:
    width = max(len(left), len(right))
    a, b = left + (0,) * (width - len(left)), right + (0,) * (width - len(right))
    return (a > b) - (a < b)


def satisfies(installed: str, requirement: Requirement) -> bool:
    """Whether an installed version meets the requirement's clause (release numbers only)."""
    if requirement.op is None or requirement.version is None:
        return True
    wanted = requirement.version
    if requirement.op in ("==", "!=") and wanted.endswith(".*"):
        prefix = _release(wanted[:-2])
        hit = _release(installed)[: len(prefix)] == prefix
        return hit if requirement.op == "==" else not hit
    order = _cmp(_release(installed), _release(wanted))
    if requirement.op == "==":
        return order == 0
    if requirement.op == "!=":
        return order != 0
    if requirement.op == ">=":
        return order >= 0
    if requirement.op == "<=":
        return order <= 0
    if requirement.op == ">":
        return order > 0
    if requirement.op == "<":
        return order < 0
    # ~=: at least the version, and the same release prefix without its last segment.
    release = _release(wanted)
    return order >= 0 and _release(installed)[: len(release) - 1] == release[:-1]


def parse_check(output: str) -> tuple[bool, dict[str, str | None]]:
    """(venv exists, {distribution name: installed version or None})."""
    present = "venv=present" in output.splitlines()
    versions: dict[str, str | None] = {}
    for line in output.splitlines():
        parts = line.split("\t")
        if parts[0] == "have" and len(parts) == 3:
            versions[parts[1]] = parts[2].strip()
        elif parts[0] == "missing" and len(parts) == 2:
            versions[parts[1]] = None
    return present, versions


class Pip(Action):
    """Packages installed into a virtualenv with its own pip."""

    name = "pip"
    options = ("venv", "python", "system_site_packages")
    summary = "Python packages in a virtualenv under the workdir"

    def parse(self, value: Any, fields: FieldReader, base: Path) -> PipArgs:
        """An array of requirements (may be empty: just the venv)."""
        texts = fields.strings("pip", template=False, value=value)
        requirements = []
        for i, text in enumerate(texts):
            try:
                requirements.append(parse_requirement(text))
            except ValueError as exc:
                raise FieldError(f"pip[{i}]", str(exc)) from None
        venv = fields.string("venv", DEFAULT_VENV, check=path_problem)
        python = fields.string(
            "python",
            "python3",
            template=False,
            check=lambda v: None if _PYTHON.fullmatch(v) else f"{v!r} is not a command name",
        )
        assert venv is not None and python is not None
        return PipArgs(
            tuple(requirements), venv, python, fields.boolean("system_site_packages", False)
        )

    def venv_path(self, args: PipArgs, ctx: NodeContext) -> str:
        """The venv's absolute path on the node."""
        return ctx.path(render_text(args.venv, ctx.variables()))

    def check(self, args: PipArgs, step: Step, ctx: NodeContext) -> Command:
        """Does the venv exist, and which of the distributions does it have."""
        names = [r.name for r in args.requirements]
        return Command(sh(CHECK_SCRIPT, self.venv_path(args, ctx), *names), become=step.become)

    def plan(self, args: PipArgs, step: Step, ctx: NodeContext, output: Output | None) -> Plan:
        """Create the venv if missing; install the requirements it does not meet."""
        failed = check_failed(output, "reading the virtualenv")
        if failed is not None:
            return failed
        assert output is not None
        venv = self.venv_path(args, ctx)
        present, versions = parse_check(output.text)
        commands: list[Command] = []
        changes: list[str] = []
        if not present:
            create = [args.python, "-m", "venv"]
            if args.system_site_packages:
                create.append("--system-site-packages")
            commands.append(Command((*create, venv), become=step.become, slow=True))
            changes.append(f"create virtualenv {venv}")
        wanted = []
        for requirement in args.requirements:
            have = versions.get(requirement.name) if present else None
            if have is None or not satisfies(have, requirement):
                wanted.append(requirement.text)
                changes.append(f"install {requirement.text}" + (f" (have {have})" if have else ""))
        if wanted:
            install = (
                f"{venv}/bin/python",
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
                *wanted,
            )
            commands.append(Command(install, become=step.become, slow=True))
        if not commands:
            return Plan.ok(f"{len(args.requirements)} package(s) in {venv}")
        return Plan(commands=commands, changes=changes)
