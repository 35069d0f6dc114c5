"""Playbook validation and ${var} substitution: pure functions, table-driven, no server."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from edgectl.errors import NotFoundError
from edgectl.provision.playbook import (
    PlaybookError,
    find_playbook,
    load_playbook,
    parse_playbook,
    shipped_playbooks,
)
from edgectl.provision.template import (
    TemplateError,
    references,
    render_argv,
    render_shell,
    render_text,
)

DATA = Path(__file__).parent / "data" / "playbooks"

STEP = '[[steps]]\nname = "s1"\ndir = "/tmp/x"\n'

# (playbook text, what the error must say besides the file name)
INVALID = [
    ('name = "x"\n= 3\n', ["invalid TOML", "line 2"]),
    ('name = "x"\n', ["field 'steps'", "at least one"]),
    ('steps = "x"\n', ["field 'steps'"]),
    ('colour = "red"\n' + STEP, ["field 'colour'", "unknown field"]),
    ('nmae = "x"\n' + STEP, ["field 'nmae'", "did you mean 'name'"]),
    ('name = "bad name!"\n' + STEP, ["field 'name'"]),
    ("vars = 3\n" + STEP, ["field 'vars'", "table"]),
    ('[vars]\n"bad-name" = 1\n' + STEP, ["field 'vars.bad-name'"]),
    ("[vars]\nx = { a = 1 }\n" + STEP, ["field 'vars.x'"]),
    ("[vars]\nx = [{ a = 1 }]\n" + STEP, ["field 'vars.x[0]'"]),
    ('[[steps]]\nname = "empty"\n', ["step 1 ('empty')", "field 'action'", "exactly one of"]),
    (
        '[[steps]]\nname = "two"\ndir = "/a"\ncommand = "true"\n',
        ["step 1 ('two')", "one action", "dir and command"],
    ),
    (
        STEP + '[[steps]]\nname = "pkgs"\napt = ["curl", "Bad_Name"]\n',
        ["step 2 ('pkgs')", "field 'apt[1]'", "not a Debian package name"],
    ),
    ('[[steps]]\nname = "pkgs"\napt = "curl"\n', ["field 'apt'", "array"]),
    ('[[steps]]\nname = "pkgs"\napt = []\n', ["field 'apt'", "at least one"]),
    (
        '[[steps]]\nname = "pkgs"\napt = ["curl"]\ncache_max_age = "old"\n',
        ["field 'cache_max_age'", "number"],
    ),
    (
        '[[steps]]\nname = "venv"\npip = ["--index-url=http://evil"]\n',
        ["step 1 ('venv')", "field 'pip[0]'", "not a requirement"],
    ),
    ('[[steps]]\nname = "venv"\npip = ["x"]\nsystem_site_packages = "yes"\n', ["true or false"]),
    (
        '[[steps]]\nname = "cfg"\nfile = "/etc/x"\ncontent = "a"\nmode = "rw-r--r--"\n',
        ["step 1 ('cfg')", "field 'mode'", "octal"],
    ),
    (
        '[[steps]]\nname = "cfg"\nfile = "/etc/x"\ncontent = "a"\nmode = "0999"\n',
        ["field 'mode'"],
    ),
    ('[[steps]]\nname = "cfg"\nfile = "/etc/x"\n', ["field 'content'", "or src"]),
    (
        '[[steps]]\nname = "cfg"\nfile = "/etc/x"\ncontent = "a"\nsrc = "f"\n',
        ["field 'src'", "not both"],
    ),
    ('[[steps]]\nname = "cfg"\nfile = "/etc/x"\nsrc = "missing.txt"\n', ["field 'src'"]),
    (
        '[[steps]]\nname = "cfg"\nfile = "/etc/x"\ncontent = "a"\nowner = "-root"\n',
        ["field 'owner'"],
    ),
    (
        '[[steps]]\nname = "cfg"\nfile = "/etc/x"\ncontent = "a"\ncontnet = "b"\n',
        ["field 'contnet'", "did you mean 'content'"],
    ),
    ('[[steps]]\nname = "cfg"\nfile = "-rf"\ncontent = "a"\n', ["field 'file'", "'-'"]),
    (
        '[[steps]]\nname = "tpl"\ntemplate = "/etc/x"\ncontent = "${unclosed"\n',
        ["step 1 ('tpl')", "field 'content'", "malformed placeholder"],
    ),
    (
        '[[steps]]\nname = "tpl"\ntemplate = "/etc/x"\ncontent = "${ spaced }"\n',
        ["field 'content'", "malformed"],
    ),
    ('[[steps]]\nname = "run"\ncommand = ""\n', ["field 'command'", "empty"]),
    ('[[steps]]\nname = "run"\ncommand = []\n', ["field 'command'", "empty"]),
    ('[[steps]]\nname = "run"\ncommand = ["ls", 3]\n', ["field 'command[1]'", "string"]),
    ('[[steps]]\nname = "run"\ncommand = "true"\ncreates = 1\n', ["field 'creates'"]),
    ('[[steps]]\nname = "run"\ncommand = "true"\nonly_if = "${x"\n', ["field 'only_if'"]),
    ('[[steps]]\nname = "svc"\nservice = "a b"\n', ["field 'service'", "unit name"]),
    ('[[steps]]\nname = "svc"\nservice = "ssh"\nstate = "running"\n', ["field 'state'"]),
    ('[[steps]]\nname = "py"\npython = "nofunction"\n', ["field 'python'", "file.py:function"]),
    ('[[steps]]\nname = "py"\npython = "missing.py:f"\n', ["field 'python'", "does not exist"]),
    ('[[steps]]\nname = "tick"\nclock = 0\n', ["field 'clock'"]),
    ('[[steps]]\nname = "w"\ndir = "/x"\nwhen = "load<high"\n', ["step 1 ('w')", "field 'when'"]),
    ('[[steps]]\nname = "w"\ndir = "/x"\nwhen = ""\n', ["field 'when'"]),
    ('[[steps]]\nname = "b"\ndir = "/x"\nbecome = "yes"\n', ["field 'become'"]),
    ('[[steps]]\nname = "t"\ndir = "/x"\ntimeout = 0\n', ["field 'timeout'"]),
    ('[[steps]]\nname = ""\ndir = "/x"\n', ["field 'name'"]),
    (STEP + STEP, ["step 2 ('s1')", "field 'name'", "also the name of step 1"]),
    ("steps = [3]\n", ["step 1", "field 'steps'", "table"]),
]


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_invalid_playbooks_are_refused_naming_file_step_and_field(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "broken.toml"
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_a_valid_playbook_parses_every_action(tmp_path: Path) -> None:
    (tmp_path / "motd.txt").write_text("hi\n")
    (tmp_path / "steps.py").write_text("def go(c, ctx):\n    return False\n")
    text = """
name = "all-actions"
description = "one of each"
[vars]
langs = ["eng", "chi_sim"]
port = 8080
debug = false
[[steps]]
name = "pkgs"
apt = ["tesseract-ocr", "tesseract-ocr-chi-sim", "libc6:amd64"]
become = true
when = "arch=aarch64,@cameras"
[[steps]]
pip = ["pytesseract", "pillow>=9", "numpy==1.26.*", "requests[socks]~=2.31"]
[[steps]]
name = "cfg"
file = "${workdir}/motd"
src = "motd.txt"
mode = 0o640
[[steps]]
name = "tpl"
template = "${workdir}/app.ini"
content = "port = ${port}\\n"
mode = "600"
owner = "edge"
group = "edge"
[[steps]]
name = "dir"
dir = "~/data"
[[steps]]
name = "run"
command = ["tar", "xf", "${workdir}/x.tar"]
creates = "${workdir}/x"
chdir = "${workdir}"
timeout = 900
[[steps]]
name = "svc"
service = "ssh.service"
[[steps]]
name = "py"
python = "steps.py:go"
check_mode = true
[[steps]]
name = "tick"
clock = 30
"""
    book = parse_playbook(text, tmp_path / "all.toml")
    assert book.name == "all-actions"
    assert book.vars == {"langs": ["eng", "chi_sim"], "port": 8080, "debug": False}
    assert [s.action for s in book.steps] == [
        "apt",
        "pip",
        "file",
        "template",
        "dir",
        "command",
        "service",
        "python",
        "clock",
    ]
    assert [s.name for s in book.steps][:2] == ["pkgs", "pip-2"]  # a default name
    assert book.steps[0].become and book.steps[0].when_text == "arch=aarch64,@cameras"
    assert book.steps[2].args.content == b"hi\n" and book.steps[2].args.mode == 0o640
    assert book.steps[3].args.mode == 0o600 and book.steps[3].args.owner == "edge"
    assert book.steps[5].timeout == 900


def test_shipped_playbooks_load_and_are_found_by_name() -> None:
    assert shipped_playbooks() == ["analytics", "base", "ocr"]
    for name in shipped_playbooks():
        book = load_playbook(name)
        assert book.name == name and book.description
    ocr = load_playbook("ocr")
    apt_packages = [p for s in ocr.steps if s.action == "apt" for p in s.args.packages]
    assert {"tesseract-ocr-eng", "tesseract-ocr-chi-sim", "tesseract-ocr-osd"} <= set(apt_packages)
    assert find_playbook(str(DATA / "idempotent.toml")) == DATA / "idempotent.toml"
    with pytest.raises(NotFoundError, match="analytics, base, ocr"):
        find_playbook("nonesuch")


# --- ${var} substitution ------------------------------------------------------------

VARIABLES = {
    "name": "n01",
    "workdir": "/home/edge/.edgectl",
    "langs": ["eng", "chi_sim"],
    "port": 8080,
    "debug": False,
    "evil": "$(touch /tmp/pwned); `id` ${name} 'q' \"d\" \\ *",
    "site.zone": "a-1",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${name}", "n01"),
        ("${workdir}/venv", "/home/edge/.edgectl/venv"),
        ("langs=${langs}", "langs=eng chi_sim"),
        ("${port}:${debug}", "8080:false"),
        ("$HOME and $1 stay", "$HOME and $1 stay"),
        ("literal $${name}", "literal ${name}"),
        ("$$ alone", "$$ alone"),
        ("${site.zone}", "a-1"),
        ("${evil}", VARIABLES["evil"]),  # one pass: ${name} inside a value stays as it is
    ],
)
def test_render_text_substitutes_values_verbatim(template: str, expected: str) -> None:
    assert render_text(template, VARIABLES) == expected


def test_undefined_and_malformed_placeholders_are_errors() -> None:
    with pytest.raises(TemplateError, match=r"undefined variable \$\{nope\}"):
        render_text("${nope}", VARIABLES)
    with pytest.raises(TemplateError, match="malformed"):
        render_text("${name", VARIABLES)
    with pytest.raises(TemplateError, match="malformed"):
        render_text("${1abc}", VARIABLES)
    assert references("${a} ${b} $${c} ${a}") == ["a", "b"]


def test_shell_substitution_quotes_every_value_as_words() -> None:
    line = render_shell("echo ${evil} ${langs} ${workdir}/x", VARIABLES)
    assert shlex.split(line) == [
        "echo",
        VARIABLES["evil"],
        "eng",
        "chi_sim",
        "/home/edge/.edgectl/x",
    ]


def test_a_canary_in_a_value_never_runs(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    hostile = [
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"; touch {canary}",
        f"' ; touch {canary}; '",
        f'" ; touch {canary}; "',
        f"\\'; touch {canary} #",
    ]
    for value in hostile:
        line = render_shell("printf '%s\\n' ${v}", {"v": value})
        done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=10)
        assert done.stdout == value + "\n"
    assert not canary.exists()


def test_argv_substitution_spreads_whole_list_placeholders() -> None:
    argv = render_argv(["tesseract", "-l", "${langs}", "${workdir}/in.png", "x${langs}"], VARIABLES)
    assert argv == [
        "tesseract",
        "-l",
        "eng",
        "chi_sim",
        "/home/edge/.edgectl/in.png",
        "xeng chi_sim",
    ]
