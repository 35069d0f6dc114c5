"""Actions are pure: a step and a check's output in, a plan out. Table-driven, no server."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from edgectl.inventory.model import Node
from edgectl.provision.actions import ACTIONS
from edgectl.provision.actions.apt import UPDATE
from edgectl.provision.actions.pip import Requirement, parse_requirement, satisfies
from edgectl.provision.context import GatherError, NodeContext, expand_path, parse_gather
from edgectl.provision.plan import Command, Output, Plan
from edgectl.provision.playbook import Step, parse_playbook
from edgectl.provision.runner import failure_message, with_become

NODE = Node(name="cam-01", host="192.0.2.11", user="edge", labels={"role": "camera"})


def ctx(**overrides: Any) -> NodeContext:
    values: dict[str, Any] = {
        "node": NODE,
        "user": "edge",
        "uid": 1000,
        "home": "/home/edge",
        "workdir": "/home/edge/.edgectl",
        "arch": "aarch64",
        "systemd": True,
        "sudo": True,
        "clock_skew": 0.2,
        "facts": {"tesseract_langs": ["eng"]},
        "vars": {"greeting": "hi"},
    }
    values.update(overrides)
    return NodeContext(**values)


def step(body: str, tmp_path: Path | None = None) -> Step:
    base = tmp_path or Path("/nonexistent")
    return parse_playbook("[[steps]]\n" + body, base / "p.toml").steps[0]


def plan(
    s: Step, stdout: bytes | str = b"", status: int = 0, context: NodeContext | None = None
) -> Plan:
    data = stdout.encode() if isinstance(stdout, str) else stdout
    return ACTIONS[s.action].plan(s.args, s, context or ctx(), Output(status, data))


# --- apt --------------------------------------------------------------------------------

APT = step('apt = ["tesseract-ocr", "tesseract-ocr-osd"]\nbecome = true')
FRESH = "cache_mtime=1000000\nnow=1003600\n--\n"  # lists an hour old
STALE = "cache_mtime=1000000\nnow=1200000\n--\n"  # lists over two days old
BOTH = "tesseract-ocr\tinstall ok installed\ntesseract-ocr-osd\tinstall ok installed\n"
ONE = "tesseract-ocr\tinstall ok installed\ntesseract-ocr-osd\tdeinstall ok config-files\n"


@pytest.mark.parametrize(
    ("output", "status", "commands"),
    [
        (FRESH + BOTH, "ok", []),
        (STALE + BOTH, "ok", []),  # nothing missing: an old cache is not refreshed
        (FRESH + ONE, "changed", [["install", "tesseract-ocr-osd"]]),
        (STALE + ONE, "changed", [["update"], ["install", "tesseract-ocr-osd"]]),
        (
            "cache_mtime=0\nnow=5\n--\n",
            "changed",
            [["update"], ["install", "tesseract-ocr", "tesseract-ocr-osd"]],
        ),
        ("dpkg=missing\n", "failed", []),
    ],
)
def test_apt_installs_only_what_is_missing_and_refreshes_only_a_stale_cache(
    output: str, status: str, commands: list[list[str]]
) -> None:
    result = plan(APT, output)
    assert result.status == status
    got = [
        [
            a
            for a in c.argv
            if not a.startswith("-")
            and a not in ("env", "apt-get", "DEBIAN_FRONTEND=noninteractive")
        ]
        for c in result.commands
    ]
    assert got == commands
    assert all(c.become and c.slow for c in result.commands)


def test_apt_check_needs_no_root_and_sends_names_as_arguments() -> None:
    check = ACTIONS["apt"].check(APT.args, APT, ctx())
    assert check is not None and not check.become
    assert check.argv[:2] == ("sh", "-c") and check.argv[-2:] == (
        "tesseract-ocr",
        "tesseract-ocr-osd",
    )


def test_apt_retries_once_after_an_update_when_no_candidate_was_found() -> None:
    install = plan(APT, FRESH + ONE).commands[0]
    missing = Output(100, b"", b"E: Unable to locate package tesseract-ocr-osd\n")
    retry = ACTIONS["apt"].recover(APT.args, APT, ctx(), install, missing, [install])
    assert retry == [UPDATE, install]
    # Not twice, and not for other failures.
    assert ACTIONS["apt"].recover(APT.args, APT, ctx(), install, missing, [UPDATE, install]) is None
    locked = Output(100, b"", b"E: Could not get lock /var/lib/dpkg/lock-frontend\n")
    assert ACTIONS["apt"].recover(APT.args, APT, ctx(), install, locked, [install]) is None


# --- pip --------------------------------------------------------------------------------

PIP = step('pip = ["pytesseract", "pillow>=10"]')
VENV = "/home/edge/.edgectl/venv"


def test_pip_creates_the_venv_and_installs_when_it_is_missing() -> None:
    result = plan(PIP, "venv=missing\n")
    assert result.status == "changed"
    assert result.commands[0].argv == ("python3", "-m", "venv", VENV)
    assert result.commands[1].argv[:4] == (f"{VENV}/bin/python", "-m", "pip", "install")
    assert result.commands[1].argv[-2:] == ("pytesseract", "pillow>=10")


@pytest.mark.parametrize(
    ("listing", "install"),
    [
        ("have\tpytesseract\t0.3.13\nhave\tpillow\t11.3.0\n", []),
        ("have\tpytesseract\t0.3.13\nhave\tpillow\t9.5.0\n", ["pillow>=10"]),
        ("missing\tpytesseract\nhave\tpillow\t11.0\n", ["pytesseract"]),
    ],
)
def test_pip_installs_only_unmet_requirements(listing: str, install: list[str]) -> None:
    result = plan(PIP, "venv=present\n" + listing)
    if not install:
        assert result.status == "ok" and not result.commands
    else:
        assert [c.argv[-len(install) :] for c in result.commands] == [tuple(install)]


@pytest.mark.parametrize(
    ("installed", "requirement", "ok"),
    [
        ("1.2.3", "x", True),
        ("1.2.3", "x==1.2.3", True),
        ("1.2.3", "x==1.2", False),
        ("1.2.0", "x==1.2", True),
        ("1.2.3", "x==1.2.*", True),
        ("1.3.0", "x==1.2.*", False),
        ("1.3.0", "x!=1.2.*", True),
        ("1.10", "x>=1.9", True),
        ("1.9", "x>1.9", False),
        ("2.0", "x<2", False),
        ("2.0", "x<=2", True),
        ("2.31.5", "x~=2.31", True),
        ("3.0", "x~=2.31", False),
        ("2.30", "x~=2.31", False),
        ("11.3.0", "x>=9", True),
        ("1.26.4", "x==1.26.*", True),
    ],
)
def test_version_clauses(installed: str, requirement: str, ok: bool) -> None:
    assert satisfies(installed, parse_requirement(requirement)) is ok


def test_requirements_with_options_or_urls_are_refused() -> None:
    for text in ("-e .", "--index-url=x", "x @ https://evil", "x; os_name=='nt'", "x>=1,<2"):
        with pytest.raises(ValueError):
            parse_requirement(text)
    assert parse_requirement("requests[socks] >= 2") == Requirement(
        "requests[socks] >= 2", "requests", ">=", "2"
    )


# --- file, template, dir ------------------------------------------------------------------


def file_check(content: bytes | None, mode: str = "644", owner: str = "edge") -> bytes:
    if content is None:
        return b"kind=missing\nparent=1\n"
    head = (
        f"kind=file\nstat={mode} {owner} {owner} {len(content)}\n"
        f"sha256={hashlib.sha256(content).hexdigest()}\n"
    ).encode()
    return head + b"--edgectl-content--\n" + content


def test_file_missing_is_written_atomically_with_a_default_mode(tmp_path: Path) -> None:
    s = step('file = "${workdir}/motd"\ncontent = "hello\\n"')
    result = plan(s, file_check(None))
    assert result.status == "changed"
    (write,) = result.commands
    assert write.stdin == b"hello\n"
    assert write.argv[-3:] == ("/home/edge/.edgectl/motd", "0644", "")
    assert "+hello" in (result.diff or "") and "/dev/null" in (result.diff or "")


@pytest.mark.parametrize(
    ("current", "mode", "owner", "expect"),
    [
        (b"hello\n", "640", "edge", []),
        (b"hello\n", "644", "edge", [("chmod", "0640")]),
        (b"hello\n", "640", "root", [("chown", "edge")]),
        (b"hullo\n", "640", "edge", [("sh", "-c")]),
    ],
)
def test_file_changes_only_what_differs(
    current: bytes, mode: str, owner: str, expect: list[tuple[str, str]]
) -> None:
    s = step('file = "/srv/motd"\ncontent = "hello\\n"\nmode = "0640"\nowner = "edge"')
    result = plan(s, file_check(current, mode, owner))
    assert [c.argv[:2] for c in result.commands] == expect
    if current != b"hello\n":
        assert "-hullo" in (result.diff or "") and "+hello" in (result.diff or "")


def test_file_too_large_to_read_back_is_compared_by_sha256() -> None:
    s = step('file = "/srv/blob"\ncontent = "hello\\n"')
    digest = hashlib.sha256(b"hello\n").hexdigest()
    same = f"kind=file\nstat=644 edge edge 6\nsha256={digest}\n".encode()
    assert plan(s, same).status == "ok"
    other = b"kind=file\nstat=644 edge edge 9000000\nsha256=" + b"0" * 64 + b"\n"
    result = plan(s, other)
    assert result.status == "changed" and "too large to diff" in (result.diff or "")


def test_file_refuses_directories_and_special_files() -> None:
    s = step('file = "/srv/x"\ncontent = "a"')
    assert plan(s, b"kind=dir\n").fail == "/srv/x is a directory"
    assert plan(s, b"kind=other\n").status == "failed"


def test_template_renders_node_vars_labels_and_facts() -> None:
    s = step(
        'template = "${workdir}/app.ini"\n'
        'content = "${name} ${user} ${role} ${greeting} ${tesseract_langs} $${literal}\\n"'
    )
    result = plan(s, file_check(None))
    assert result.commands[0].stdin == b"cam-01 edge camera hi eng ${literal}\n"
    missing = step('template = "/x"\ncontent = "${nope}"')
    with pytest.raises(ValueError, match="undefined variable"):
        plan(missing, file_check(None))


@pytest.mark.parametrize(
    ("output", "expect"),
    [
        (b"kind=missing\n", [("mkdir", "-p"), ("chmod", "0750")]),
        (b"kind=dir\nstat=750 edge edge\n", []),
        (b"kind=dir\nstat=755 edge edge\n", [("chmod", "0750")]),
    ],
)
def test_dir_creates_and_fixes_mode(output: bytes, expect: list[tuple[str, str]]) -> None:
    s = step('dir = "~/data"\nmode = "0750"')
    result = plan(s, output)
    assert [c.argv[:2] for c in result.commands] == expect
    assert all(c.argv[-1] == "/home/edge/data" for c in result.commands)
    assert plan(s, b"kind=other\n").status == "failed"


# --- command, service, clock --------------------------------------------------------------


def test_an_unguarded_command_always_runs() -> None:
    s = step('command = "echo ${name}"')
    assert ACTIONS["command"].check(s.args, s, ctx()) is None
    result = plan(s)
    assert result.status == "changed" and result.commands[0].argv == ("sh", "-c", "echo cam-01")


@pytest.mark.parametrize(
    ("guard", "status"),
    [("creates", "ok"), ("unless", "ok"), ("only_if", "ok"), ("run", "changed"), ("?", "failed")],
)
def test_guards_decide_whether_a_command_runs(guard: str, status: str) -> None:
    s = step('command = "make"\ncreates = "${workdir}/built"\nunless = "test -e ${name}"')
    check = ACTIONS["command"].check(s.args, s, ctx())
    assert check is not None
    assert check.argv[4:6] == ("/home/edge/.edgectl/built", "test -e cam-01")
    assert plan(s, f"guard={guard}\n").status == status


def test_service_is_skipped_without_systemd_and_enabled_started_with_it() -> None:
    s = step('service = "ocr-runner"\nbecome = true')
    no_systemd = ctx(systemd=False)
    assert ACTIONS["service"].check(s.args, s, no_systemd) is None
    assert plan(s, context=no_systemd).status == "skipped"
    result = plan(s, "enabled=disabled\nactive=inactive\n")
    assert [c.argv[1] for c in result.commands] == ["enable", "start"]
    assert plan(s, "enabled=enabled\nactive=active\n").status == "ok"
    assert plan(s, "enabled=\nactive=inactive\n").status == "failed"


@pytest.mark.parametrize(
    ("skew", "status"), [(0.2, "ok"), (-29.0, "ok"), (31.0, "failed"), (None, "failed")]
)
def test_clock_reports_skew_and_fails_beyond_the_limit(skew: float | None, status: str) -> None:
    s = step("clock = 30")
    assert plan(s, context=ctx(clock_skew=skew)).status == status


# --- gather and become --------------------------------------------------------------------

GATHER = """edgectl_gather=1
home=/home/edge
user=edge
uid=1000
arch=aarch64
system=Linux
os_id=raspbian
os_like=debian
sudo=1
time=1000.5
edgectl_gather_end=1
"""


def test_gather_parses_identity_paths_and_clock() -> None:
    node = Node(name="n", host="192.0.2.1", workdir="~/.edgectl")
    context = parse_gather(GATHER, node, {"arch": "armv7l"}, {}, sent_at=999.0, received_at=1001.0)
    assert (context.home, context.workdir, context.uid) == (
        "/home/edge",
        "/home/edge/.edgectl",
        1000,
    )
    assert context.debian_like and not context.systemd and context.sudo
    assert context.clock_skew == 0.5
    assert context.when_facts()["arch"] == "aarch64"  # fresher than the stored fact
    with pytest.raises(GatherError):
        parse_gather(GATHER.replace("edgectl_gather_end=1\n", ""), node, {}, {}, 0, 0)
    with pytest.raises(GatherError):
        parse_gather(GATHER.replace("home=/home/edge", "home="), node, {}, {}, 0, 0)
    assert expand_path("work", "/home/e") == "/home/e/work"
    assert expand_path("/srv/../opt", "/home/e") == "/opt"


def test_become_uses_sudo_without_prompting_and_only_when_not_root() -> None:
    command = Command(("apt-get", "update"), become=True)
    assert with_become(command, ctx()) == ["sudo", "-n", "--", "apt-get", "update"]
    assert with_become(command, ctx(uid=0)) == ["apt-get", "update"]
    refused = Output(1, b"", b"sudo: a password is required\n")
    assert failure_message(command, refused, ctx()).startswith("needs root")
