"""`apt`: Debian packages installed. Reads dpkg's database without root; installs with it.

The package cache is refreshed only when needed: a package is missing and the cache is
older than `cache_max_age` hours (or absent), or an install failed for want of a candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.provision.actions.base import Action, check_failed
from edgectl.provision.context import NodeContext
from edgectl.provision.fields import FieldError, FieldReader
from edgectl.provision.plan import Command, Output, Plan, parse_key_values, sh

if TYPE_CHECKING:
    from edgectl.provision.playbook import Step

_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{0,127}(:[a-z0-9-]{1,32})?")
DEFAULT_CACHE_MAX_AGE_H = 24.0

CHECK_SCRIPT = r"""
command -v dpkg-query >/dev/null 2>&1 || { echo "dpkg=missing"; exit 0; }
t=0
for f in /var/lib/apt/lists/*_Packages*; do
  [ -e "$f" ] || continue
  m=$(stat -c %Y "$f" 2>/dev/null) || continue
  [ "$m" -gt "$t" ] && t=$m
done
echo "cache_mtime=$t"
echo "now=$(date +%s)"
echo "--"
dpkg-query -W -f='${Package}\t${Status}\n' "$@" 2>/dev/null
exit 0
"""

# What apt says when its lists do not know a package (stale or never fetched).
_NO_CANDIDATE = re.compile(
    r"Unable to locate package|has no installation candidate|Failed to fetch|"
    r"Version '[^']*' for '[^']*' was not found"
)


@dataclass(frozen=True)
class AptArgs:
    """The packages wanted, and how old a cache may be before an install refreshes it."""

    packages: tuple[str, ...]
    cache_max_age_h: float


def package_problem(value: str) -> str | None:
    """Why a Debian package name is refused, or None."""
    if not _PACKAGE.fullmatch(value):
        return f"{value!r} is not a Debian package name"
    return None


def installed_packages(output: str) -> set[str]:
    """Names dpkg-query reports as installed (`install ok installed`)."""
    _, _, listing = output.partition("--\n")
    installed = set()
    for line in listing.splitlines():
        name, sep, status = line.partition("\t")
        if sep and status.strip().endswith(" installed") and status.split()[0] == "install":
            installed.add(name.strip())
    return installed


def _install(packages: list[str]) -> Command:
    return Command(
        (
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *packages,
        ),
        become=True,
        slow=True,
    )


UPDATE = Command(("apt-get", "update", "-q"), become=True, slow=True)


class Apt(Action):
    """Packages installed with apt-get."""

    name = "apt"
    options = ("cache_max_age",)
    summary = "Debian packages installed (apt-get); the cache refreshed only when needed"

    def parse(self, value: Any, fields: FieldReader, base: Path) -> AptArgs:
        """A non-empty array of package names."""
        packages = fields.strings("apt", template=False, check=package_problem, value=value)
        if not packages:
            raise FieldError("apt", "must name at least one package")
        age = fields.number("cache_max_age", DEFAULT_CACHE_MAX_AGE_H, 0, 24 * 365)
        assert age is not None
        return AptArgs(tuple(dict.fromkeys(packages)), age)

    def check(self, args: AptArgs, step: Step, ctx: NodeContext) -> Command:
        """dpkg-query for the packages, and the age of apt's lists: one command, no root."""
        names = [p.split(":", 1)[0] for p in args.packages]
        return Command(sh(CHECK_SCRIPT, *names))

    def plan(self, args: AptArgs, step: Step, ctx: NodeContext, output: Output | None) -> Plan:
        """Install what is missing; refresh the lists first when they are old or absent."""
        failed = check_failed(output, "reading dpkg's database")
        if failed is not None:
            return failed
        assert output is not None
        text = output.text
        if "dpkg=missing" in text:
            return Plan.failed("apt steps need a Debian or Ubuntu node (no dpkg-query here)")
        installed = installed_packages(text)
        missing = [p for p in args.packages if p.split(":", 1)[0] not in installed]
        if not missing:
            return Plan.ok(f"{len(args.packages)} package(s) installed")
        values = parse_key_values(text.partition("--\n")[0])
        commands = []
        if cache_is_stale(values, args.cache_max_age_h):
            commands.append(UPDATE)
        commands.append(_install(missing))
        return Plan(commands=commands, changes=[f"install {p}" for p in missing])

    def recover(
        self,
        args: AptArgs,
        step: Step,
        ctx: NodeContext,
        failed: Command,
        output: Output,
        ran: list[Command],
    ) -> list[Command] | None:
        """An install that found no candidate gets one `apt-get update` and one more try."""
        if UPDATE in ran or failed.argv[:4] != _install([]).argv[:4]:
            return None
        if not _NO_CANDIDATE.search(output.stderr.decode("utf-8", "replace") + output.text):
            return None
        return [UPDATE, failed]


def cache_is_stale(values: dict[str, str], max_age_h: float) -> bool:
    """True when apt's lists are absent or older than max_age_h (by the node's own clock)."""
    try:
        mtime = int(values.get("cache_mtime", "0"))
        now = int(values.get("now", "0"))
    except ValueError:
        return True
    if mtime <= 0 or now <= 0:
        return True
    return now - mtime > max_age_h * 3600
