"""Inventory importers and exporters: real-format files, bad inputs with exact lines, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgectl.errors import ImportFormatError, ValidationError
from edgectl.inventory.formats import (
    EXPORT_FORMATS,
    FORMATS,
    detect_format,
    dump_nodes,
    load_nodes,
    parse_text,
)
from edgectl.inventory.formats.ansible_common import expand_hosts
from edgectl.inventory.model import Node

DATA = Path(__file__).parent / "data" / "formats"
EXAMPLES = Path(__file__).parent.parent / "inventory"


def by_name(nodes: list[Node]) -> dict[str, Node]:
    return {node.name: node for node in nodes}


def import_error(text: str, format: str, path: str = "inv") -> ImportFormatError:
    with pytest.raises(ImportFormatError) as caught:
        parse_text(text, format, path)
    return caught.value


# --- the example site, in every format ----------------------------------------------------


def test_example_inventories_all_import_to_the_same_site() -> None:
    reference = load_nodes(str(EXAMPLES / "site.toml"))
    assert [n.name for n in reference] == [
        *(f"cam-0{i}" for i in range(1, 7)),
        "gw-01",
        "gw-02",
        "gpu-01",
    ]
    for name in ("site.csv", "site.ini", "site.yml"):
        assert sorted(load_nodes(str(EXAMPLES / name)), key=lambda n: n.name) == sorted(
            reference, key=lambda n: n.name
        ), name

    def login(node: Node) -> tuple[str, str, int, str | None]:
        return node.name, node.host, node.port, node.user

    from_ssh = load_nodes(str(EXAMPLES / "ssh_config"))
    assert sorted(map(login, from_ssh)) == sorted(map(login, reference))


def test_example_site_has_the_documented_shape() -> None:
    site = by_name(load_nodes(str(EXAMPLES / "site.ini")))
    assert site["cam-01"].groups == ["cameras", "shanghai"]
    assert site["cam-06"].groups == ["cameras", "shenzhen"]
    assert site["cam-04"].labels == {"arch": "arm64", "role": "camera", "site": "shenzhen"}
    assert site["gw-02"].port == 2222
    assert site["gpu-01"].labels["gpu"] == "nvidia"
    assert site["gpu-01"].groups == ["gpu", "shanghai"]
    assert all(node.user == "edge" for node in site.values())
    assert all(node.host.startswith("192.0.2.") for node in site.values())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("site.toml", "toml"),
        ("site.csv", "csv"),
        ("site.ini", "ansible"),
        ("site.yml", "ansible"),
        ("ssh_config", "ssh-config"),
    ],
)
def test_example_files_are_detected_by_name_and_by_content(name: str, expected: str) -> None:
    text = (EXAMPLES / name).read_text("utf-8")
    assert detect_format(name, text) == expected
    assert detect_format("inventory-without-extension", text) == expected


# --- Ansible -----------------------------------------------------------------------------


@pytest.fixture(params=["ansible_guide.ini", "ansible_guide.yml"])
def guide(request: pytest.FixtureRequest) -> dict[str, Node]:
    return by_name(load_nodes(str(DATA / request.param)))


def test_ansible_host_ranges_keep_zero_padding_letters_and_strides(guide: dict[str, Node]) -> None:
    web = sorted(n for n in guide if n.startswith("web"))
    assert web == [f"web{i:02d}.example.com" for i in range(1, 21)]
    assert sorted(n for n in guide if n.startswith("db-")) == [
        f"db-{c}.example.com" for c in "abcdef"
    ]
    assert sorted(n for n in guide if n.startswith("odd")) == [
        f"odd{i}.example.com" for i in (1, 3, 5, 7, 9)
    ]
    assert guide["web07.example.com"].groups == ["webservers"]


def test_ansible_connection_vars_map_to_node_fields(guide: dict[str, Node]) -> None:
    host2 = guide["host2"]
    assert (host2.host, host2.port, host2.user) == ("192.0.2.102", 2222, "deploy")
    assert guide["backup.example.com"].port == 5309  # host:port shorthand
    assert guide["odd3.example.com"].user == "legacy"  # old ansible_ssh_user spelling
    assert guide["localhost"].connection == "local"
    assert guide["web01.example.com"].host == "web01.example.com"  # no ansible_host: the name


def test_ansible_ungrouped_host_gets_no_groups_but_all_vars(guide: dict[str, Node]) -> None:
    bastion = guide["bastion.example.com"]
    assert bastion.groups == []
    assert bastion.port == 2201
    assert bastion.labels == {"ntp_server": "ntp.example.com"}


def test_ansible_groups_are_transitive_through_children(guide: dict[str, Node]) -> None:
    assert guide["host1"].groups == ["atlanta", "southeast", "usa"]
    assert guide["host4"].groups == ["raleigh", "southeast", "usa"]
    assert guide["odd1.example.com"].groups == ["northeast", "usa"]


def test_ansible_variable_precedence_all_parent_child_host(guide: dict[str, Node]) -> None:
    # host var beats the atlanta group var http_port=8080
    assert guide["host1"].labels == {
        "escape_pods": "2",
        "http_port": "80",
        "max_requests": "808",
        "ntp_server": "ntp.atlanta.example.com",  # child group beats southeast and all
    }
    assert guide["host3"].labels["ntp_server"] == "ntp.southeast.example.com"
    assert guide["host4"].labels["motd"] == "welcome to raleigh"
    assert "ansible_host" not in guide["host1"].labels


def test_ansible_ini_and_yaml_layouts_give_the_same_nodes() -> None:
    ini = load_nodes(str(DATA / "ansible_guide.ini"))
    yml = load_nodes(str(DATA / "ansible_guide.yml"))
    assert len(ini) == 20 + 7 + 4 + 5 + 2
    assert sorted(ini, key=lambda n: n.name) == sorted(yml, key=lambda n: n.name)


def test_ansible_ini_children_section_before_the_child_is_defined() -> None:
    text = "[site:children]\ncameras\n\n[cameras]\ncam-01 ansible_ssh_host=192.0.2.9\n"
    (node,) = parse_text(text, "ansible")
    assert node.groups == ["cameras", "site"]
    assert node.host == "192.0.2.9"


def test_ansible_ini_old_port_spelling_and_quoted_group_var() -> None:
    text = '[g]\nh1 ansible_ssh_port=2022\n\n[g:vars]\nnote = "two words"\n'
    (node,) = parse_text(text, "ansible", "hosts.ini")
    assert node.port == 2022
    assert node.labels == {"note": "two words"}


def test_ansible_yaml_values_are_stringified_for_labels() -> None:
    text = (
        "all:\n"
        "  hosts:\n"
        "    edge-1:\n"
        "      enabled: true\n"
        "      sensors: [temp, humidity]\n"
        "      limits: {cpu: 2}\n"
        "      ratio: 0.5\n"
        "    edge-2:\n"
    )
    nodes = by_name(parse_text(text, "ansible", "inv.yml"))
    assert nodes["edge-1"].labels == {
        "enabled": "true",
        "limits": '{"cpu":2}',
        "ratio": "0.5",
        "sensors": '["temp","humidity"]',
    }
    assert nodes["edge-2"].labels == {}


def test_ansible_yaml_host_in_two_groups_gets_both() -> None:
    text = (
        "all:\n  children:\n    a:\n      hosts:\n        h1:\n"
        "    b:\n      hosts:\n        h1:\n          ansible_port: 2200\n"
    )
    (node,) = parse_text(text, "ansible", "inv.yaml")
    assert node.groups == ["a", "b"]
    assert node.port == 2200


def test_ansible_yaml_empty_document_has_no_nodes() -> None:
    assert parse_text("# nothing yet\n", "ansible", "inv.yml") == []


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("web[01:03].example.com", ["web01.example.com", "web02.example.com", "web03.example.com"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("n[1:10:4]", ["n1", "n5", "n9"]),
        ("n[:2]", ["n0", "n1", "n2"]),
        ("r[1:2]-u[a:b]", ["r1-ua", "r1-ub", "r2-ua", "r2-ub"]),
        ("[8:10]x", ["8x", "9x", "10x"]),
        ("plain.example.com", ["plain.example.com"]),
    ],
)
def test_host_ranges_expand(pattern: str, expected: list[str]) -> None:
    assert expand_hosts(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("web[01:20.example.com", "unclosed range"),
        ("web01:20].example.com", "unmatched ']'"),
        ("web[1:2:3:4]", "bad range"),
        ("web[5:1]", "start > end"),
        ("web[01:100]", "same width"),
        ("web[a:5]", "numbers or single letters"),
        ("web[1:5:0]", "bad step"),
        ("web[0:9999999]", "more than"),
    ],
)
def test_bad_host_ranges_are_refused(pattern: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        expand_hosts(pattern)


# --- OpenSSH client config ---------------------------------------------------------------


@pytest.fixture
def ssh_nodes() -> dict[str, Node]:
    return by_name(load_nodes(str(DATA / "ssh" / "config")))


def test_ssh_config_concrete_aliases_become_nodes_and_patterns_do_not(
    ssh_nodes: dict[str, Node],
) -> None:
    assert sorted(ssh_nodes) == [
        "cam-01",
        "cam-02",
        "cam-03",
        "gw-01",
        "gw-02",
        "gw-backup",
        "lab-01",
    ]


def test_ssh_config_first_value_wins_in_file_order(ssh_nodes: dict[str, Node]) -> None:
    assert ssh_nodes["cam-02"].port == 2202  # its own block comes before `Host cam-*`
    assert ssh_nodes["cam-01"].port == 2200  # from `Host cam-*`, not the trailing `Host *`
    assert ssh_nodes["cam-01"].user == "camera"
    assert ssh_nodes["gw-01"].port == 22  # from `Host *` at the end: a default
    assert ssh_nodes["gw-01"].key == "~/.ssh/fleet_ed25519"  # the global one came first


def test_ssh_config_hostname_substitution_and_key_value_spellings(
    ssh_nodes: dict[str, Node],
) -> None:
    assert ssh_nodes["cam-03"].host == "cam-03.cams.example.net"
    assert ssh_nodes["gw-01"].host == "192.0.2.1"  # HostName=value
    assert ssh_nodes["gw-01"].user == "gateway"  # User = value
    assert ssh_nodes["gw-backup"].host == "192.0.2.2"  # second alias of a Host line


def test_ssh_config_negation_excludes_a_host_from_a_block(ssh_nodes: dict[str, Node]) -> None:
    assert ssh_nodes["cam-03"].user == "edge"  # `Host cam-* !cam-03` does not apply


def test_ssh_config_include_is_read_in_place(ssh_nodes: dict[str, Node]) -> None:
    lab = ssh_nodes["lab-01"]
    assert (lab.host, lab.port, lab.user) == ("192.0.2.50", 2022, "edge")
    assert ssh_nodes["cam-03"].port == 2203  # the included block precedes `Host *`


def test_ssh_config_match_block_options_are_not_applied(ssh_nodes: dict[str, Node]) -> None:
    assert ssh_nodes["gw-02"].user == "edge"


def test_ssh_config_keywords_are_case_insensitive_and_quotes_are_removed() -> None:
    text = 'HOST box\n  hostNAME 192.0.2.5\n  PORT=2022\n  identityfile "~/my keys/id"\n'
    (node,) = parse_text(text, "ssh-config")
    assert (node.host, node.port, node.key) == ("192.0.2.5", 2022, "~/my keys/id")


def test_ssh_config_include_inside_a_host_block_is_conditional(tmp_path: Path) -> None:
    (tmp_path / "extra").write_text("User fromextra\nHost other\n  User otheruser\n")
    (tmp_path / "config").write_text("Host one\n  Include extra\nHost two\n")
    nodes = by_name(load_nodes(str(tmp_path / "config")))
    assert nodes["one"].user == "fromextra"
    assert nodes["two"].user is None
    # `other` is only matched when the enclosing `Host one` matches as well: never
    assert nodes["other"].user is None


def test_ssh_config_include_loop_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("Host a\n\nInclude config\n")
    with pytest.raises(ImportFormatError, match="nested more than 8") as caught:
        load_nodes(str(tmp_path / "config"))
    assert caught.value.line == 3


def test_ssh_config_missing_include_is_ignored_like_ssh(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("Include nowhere/*.conf\nHost a\n")
    assert [n.name for n in load_nodes(str(tmp_path / "config"))] == ["a"]


def test_ssh_config_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "bad.conf").write_text("\nHost x\n  Port seventy\n")
    (tmp_path / "config").write_text("Include bad.conf\n")
    with pytest.raises(ImportFormatError) as caught:
        load_nodes(str(tmp_path / "config"))
    assert caught.value.path == str(tmp_path / "bad.conf")
    assert caught.value.line == 3


# --- CSV, TOML, JSON specifics -----------------------------------------------------------


def test_csv_columns_in_any_order_with_quoted_and_multiline_cells() -> None:
    nodes = by_name(load_nodes(str(DATA / "unusual_order.csv")))
    first = nodes["scanner-01"]
    assert (first.host, first.port, first.user, first.key) == (
        "192.0.2.31",
        2222,
        "scan",
        "~/keys/scanner key",
    )
    assert first.groups == ["lab", "ocr"]
    assert first.labels == {"owner": "ops, night shift", "room": "lab 2"}
    second = nodes["scanner-02"]
    assert second.labels == {"note": 'a "quoted" word'}
    assert second.groups == ["lab", "ocr"]  # the groups cell spans two lines
    assert (second.port, second.user, second.key) == (22, None, None)  # empty: defaults
    assert nodes["scanner-03"].host == "2001:db8::7"


def test_csv_comment_lines_inside_a_quoted_cell_are_kept() -> None:
    text = 'name,host,groups\nn1,192.0.2.1,"a;\n#b"\n'
    error = import_error(text, "csv")
    assert error.line == 2 and "'#b'" in str(error)  # a cell, not a skipped comment


def test_csv_ten_thousand_rows_parse() -> None:
    rows = ["host,name,labels,groups"]
    rows += [
        f"10.{i // 65536}.{i // 256 % 256}.{i % 256},n{i:05d},idx={i};rack=r{i % 40},g{i % 7}"
        for i in range(10_000)
    ]
    nodes = parse_text("\n".join(rows) + "\n", "csv", "big.csv")
    assert len(nodes) == 10_000
    assert nodes[9_999].name == "n09999"
    assert nodes[9_999].host == "10.0.39.15"
    assert nodes[1234].labels == {"idx": "1234", "rack": "r34"}
    assert nodes[1234].groups == ["g2"]


def test_toml_defaults_apply_and_entries_override_them() -> None:
    text = (
        '[defaults]\nuser = "edge"\nport = 2200\nworkdir = "/opt/edge"\n\n'
        '[[nodes]]\nname = "a"\nhost = "192.0.2.1"\n\n'
        '[[nodes]]\nname = "b"\nhost = "192.0.2.2"\nport = 22\nuser = "root"\n'
        "labels = { floor = 3, cooled = true }\n"
    )
    a, b = parse_text(text, "toml")
    assert (a.user, a.port, a.workdir) == ("edge", 2200, "/opt/edge")
    assert (b.user, b.port, b.workdir) == ("root", 22, "/opt/edge")
    assert b.labels == {"cooled": "true", "floor": "3"}


def test_json_accepts_an_object_with_nodes() -> None:
    text = json.dumps({"nodes": [{"name": "a", "host": "192.0.2.1", "user": None}]})
    (node,) = parse_text(text, "json")
    assert node == Node(name="a", host="192.0.2.1")


# --- bad inputs: the exact line ----------------------------------------------------------

BAD_INPUTS = [
    # (id, format, text, line, fragment of the message)
    (
        "toml-bad-port",
        "toml",
        '[defaults]\nuser = "e"\n\n[[nodes]]\nname = "a"\nhost = "h"\n\n'
        '[[nodes]]\nname = "b"\nhost = "h"\nport = 70000\n',
        8,
        "invalid port 70000",
    ),
    (
        "toml-syntax",
        "toml",
        '[[nodes]]\nname = "a"\nhost = "h\n',
        3,
        "TOML syntax error",
    ),
    (
        "toml-unknown-node-key",
        "toml",
        '\n[[nodes]]\nname = "a"\nhost = "h"\nadress = "x"\n',
        2,
        "unknown key 'adress'",
    ),
    ("toml-unknown-top-key", "toml", '# c\n\n[servers]\nx = "1"\n', 3, "unknown key 'servers'"),
    (
        "toml-unknown-default",
        "toml",
        '\n[defaults]\ngroups = ["x"]\n',
        2,
        "unknown key 'groups' in [defaults]",
    ),
    (
        "toml-duplicate",
        "toml",
        '[[nodes]]\nname = "a"\nhost = "h"\n[[nodes]]\nname = "b"\nhost = "h"\n'
        '[[nodes]]\nname = "a"\nhost = "h2"\n',
        7,
        "duplicate node name 'a' (lines 1 and 7)",
    ),
    (
        "toml-nested-label",
        "toml",
        '[[nodes]]\nname = "a"\nhost = "h"\nlabels = { x = [1] }\n',
        1,
        "label 'x' must be a single value",
    ),
    (
        "csv-bad-port",
        "csv",
        "name,host,port\na,192.0.2.1,22\nb,192.0.2.2,http\n",
        3,
        "invalid port 'http'",
    ),
    (
        "csv-bad-port-after-multiline-cell",
        "csv",
        'name,host,groups,port\nn1,192.0.2.1,"a;\nb",22\nn2,192.0.2.2,,99999\n',
        4,
        "invalid port",
    ),
    (
        "csv-bad-name",
        "csv",
        "# inventory\nname,host\n\nweb 1,192.0.2.1\n",
        4,
        "invalid node name 'web 1'",
    ),
    ("csv-unknown-column", "csv", "# inventory\nname,host,adress\n", 2, "unknown column 'adress'"),
    ("csv-missing-host-column", "csv", "name,port\n", 1, "needs a 'host' column"),
    (
        "csv-duplicate",
        "csv",
        "name,host\na,h1\nb,h2\n# comment\na,h3\n",
        5,
        "duplicate node name 'a' (lines 2 and 5)",
    ),
    ("csv-cell-count", "csv", "name,host\na,h1,extra\n", 2, "3 cells, the header has 2"),
    ("csv-empty-host", "csv", "name,host\na, \n", 2, "the 'host' cell is empty"),
    ("csv-bad-label", "csv", "name,host,labels\na,h,tier\n", 2, "write it as key=value"),
    (
        "ini-unclosed-range",
        "ansible",
        "[web]\nweb01\nweb[01:20.example.com\n",
        3,
        "unclosed range",
    ),
    (
        "ini-cycle",
        "ansible",
        "[a:children]\nb\n\n[b:children]\nc\n\n[c:children]\na\n",
        8,
        "cycle in group children: a -> b -> c -> a",
    ),
    ("ini-bad-group-name", "ansible", "[ok]\nh1\n\n[bad group]\nh2\n", 4, "invalid group name"),
    (
        "ini-bad-port",
        "ansible",
        "[g]\nh1 ansible_port=22\nh2 ansible_port=ssh\n",
        3,
        "invalid port 'ssh'",
    ),
    (
        "ini-bad-port-from-group-vars",
        "ansible",
        "[g]\nh1\n\n[g:vars]\nansible_port=0\n",
        5,
        "host 'h1': invalid port '0'",
    ),
    (
        "ini-duplicate-in-group",
        "ansible",
        "[g]\nh1\nh2\nh1\n",
        4,
        "duplicate host 'h1' in group 'g' (lines 2 and 4)",
    ),
    (
        "ini-conflicting-host-vars",
        "ansible",
        "[a]\nh1 ansible_host=192.0.2.1\n[b]\nh1 ansible_host=192.0.2.2\n",
        4,
        "ansible_host is '192.0.2.1' on line 2",
    ),
    ("ini-bad-host-name", "ansible", "[g]\nok\nbad@name\n", 3, "invalid node name"),
    ("ini-no-equals", "ansible", "[g]\nh1 ansible_port\n", 2, "expected key=value"),
    ("ini-unclosed-quote", "ansible", "[g]\nh1 motd='hello\n", 2, "No closing quotation"),
    ("ini-undefined-child", "ansible", "[p:children]\nmissing\n", 2, "never defined"),
    ("ini-unknown-section-kind", "ansible", "[g:hostvars]\n", 1, "unknown section type"),
    ("ini-vars-no-equals", "ansible", "[g]\nh\n[g:vars]\njust words\n", 4, "expected key=value"),
    (
        "ini-unsupported-connection",
        "ansible",
        "[g]\nh1 ansible_connection=docker\n",
        2,
        "ansible_connection 'docker' is not supported",
    ),
    ("ini-child-all", "ansible", "[x]\nh\n[x:children]\nall\n", 4, "cannot be a child"),
    (
        "yaml-syntax",
        "ansible-yaml",
        "all:\n  hosts:\n    h1: {ansible_port: 22\n    h2:\n",
        4,
        "YAML syntax error",
    ),
    (
        "yaml-bad-port",
        "ansible-yaml",
        "all:\n  hosts:\n    h1:\n      ansible_host: 192.0.2.1\n      ansible_port: 0\n",
        5,
        "invalid port 0",
    ),
    (
        "yaml-bad-host-name",
        "ansible-yaml",
        "all:\n  children:\n    g:\n      hosts:\n        ok:\n        'bad name':\n",
        6,
        "invalid node name 'bad name'",
    ),
    (
        "yaml-duplicate-host",
        "ansible-yaml",
        "all:\n  hosts:\n    h1:\n    h2:\n    h1:\n",
        5,
        "duplicate key 'h1' (lines 3 and 5)",
    ),
    (
        "yaml-cycle",
        "ansible-yaml",
        "a:\n  children:\n    b:\n      children:\n        c:\nc:\n  children:\n    a:\n",
        8,
        "cycle in group children",
    ),
    (
        "yaml-unknown-group-key",
        "ansible-yaml",
        "all:\n  children:\n    g:\n      host:\n        h1:\n",
        4,
        "unknown key 'host' in group 'g'",
    ),
    (
        "yaml-unclosed-range",
        "ansible-yaml",
        "all:\n  hosts:\n    web[1:3.example.com:\n",
        3,
        "unclosed range",
    ),
    (
        "yaml-bad-group-name",
        "ansible-yaml",
        "all:\n  children:\n    'two words':\n      hosts: {h: null}\n",
        3,
        "invalid group name",
    ),
    (
        "ssh-bad-port",
        "ssh-config",
        "Host a\n  HostName 192.0.2.1\n\nHost *\n  Port 0\n",
        5,
        "host 'a': invalid port '0'",
    ),
    ("ssh-unclosed-quote", "ssh-config", 'Host a\n  User "edge\n', 2, "unclosed"),
    ("ssh-bad-alias", "ssh-config", "Host ok\nHost bad@alias\n", 2, "invalid node name"),
    ("ssh-empty-host", "ssh-config", "# x\nHost\n", 2, "Host needs at least one pattern"),
    ("ssh-bad-hostname-token", "ssh-config", "Host a\n  HostName %r.x\n", 2, "invalid host"),
    ("json-syntax", "json", '[\n  {"name": "a", "host": "h"},\n  {"name": }\n]\n', 3, "JSON"),
    (
        "json-bad-port",
        "json",
        '[\n  {"name": "a", "host": "h"},\n\n  {"name": "b",\n   "host": "h", "port": -1}\n]\n',
        4,
        "node 'b': invalid port -1",
    ),
    (
        "json-duplicate",
        "json",
        '{"nodes": [\n {"name": "a", "host": "h"},\n {"name": "a", "host": "h"}\n]}\n',
        3,
        "duplicate node name 'a' (lines 2 and 3)",
    ),
    ("json-unknown-field", "json", '[{"name": "a", "host": "h", "ip": 1}]', 1, "unknown node"),
]


@pytest.mark.parametrize(
    ("format", "text", "line", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS],
)
def test_bad_input_names_file_and_exact_line(
    format: str, text: str, line: int, fragment: str
) -> None:
    path = "inv.yml" if format == "ansible-yaml" else "inv.ini" if format == "ansible" else "inv"
    error = import_error(text, "ansible" if format == "ansible-yaml" else format, path)
    assert error.line == line, str(error)
    assert str(error).startswith(f"{path}:{line}: ")
    assert fragment in str(error)


# --- loading files -----------------------------------------------------------------------


def test_missing_file_gives_the_os_reason(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.csv")
    with pytest.raises(ImportFormatError, match="No such file or directory") as caught:
        load_nodes(path)
    assert caught.value.path == path


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    path.write_bytes(b"name,host\na,h\nb\xff,h\n")
    with pytest.raises(ImportFormatError, match="not UTF-8") as caught:
        load_nodes(str(path))
    assert caught.value.line == 3


def test_byte_order_mark_from_spreadsheets_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    path.write_bytes("name,host\na,192.0.2.1\n".encode("utf-8-sig"))
    assert [n.name for n in load_nodes(str(path))] == ["a"]


def test_group_option_adds_a_group_to_every_node() -> None:
    nodes = load_nodes(str(EXAMPLES / "ssh_config"), group="edge-site")
    assert all(node.groups == ["edge-site"] for node in nodes)
    cams = load_nodes(str(EXAMPLES / "site.csv"), "csv", group="cameras")
    assert cams[0].groups == ["cameras", "shanghai"]  # already a member: listed once


def test_group_option_refuses_a_bad_group_name() -> None:
    with pytest.raises(ImportFormatError, match="invalid group name"):
        load_nodes(str(EXAMPLES / "site.toml"), group="no spaces")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ImportFormatError, match="unknown format 'xml'"):
        parse_text("<x/>", "xml")


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("a.TOML", "", "toml"),
        ("a.json", "", "json"),
        ("hosts.ini", "", "ansible"),
        ("hosts.yaml", "", "ansible"),
        ("/home/u/.ssh/config", "", "ssh-config"),
        ("ssh_config", "", "ssh-config"),
        ("exported", '[{"name": "a", "host": "h"}]', "json"),
        ("exported", '[[nodes]]\nname = "a"\nhost = "h"\n', "toml"),
        ("exported", "# nodes\nhost,name\nh,a\n", "csv"),
        ("exported", "Host a\n  HostName h\n", "ssh-config"),
        ("exported", "host=a\n", "ssh-config"),
        ("hosts", "[web]\nweb01\n", "ansible"),
        ("hosts", "web01 ansible_host=192.0.2.1\n", "ansible"),
        ("hosts", "---\nall:\n  hosts:\n", "ansible"),
        ("hosts", "all:\n  hosts:\n", "ansible"),
    ],
)
def test_detect_format(path: str, text: str, expected: str) -> None:
    assert detect_format(path, text) == expected


def test_detect_format_gives_up_clearly() -> None:
    with pytest.raises(ImportFormatError, match="cannot tell the format"):
        detect_format("notes", "just some words\n")


def test_ansible_without_extension_is_sniffed_as_yaml_or_ini() -> None:
    yml = parse_text("all:\n  hosts:\n    h1:\n", "ansible", "hosts")
    ini = parse_text("[g]\nh1\n", "ansible", "hosts")
    assert [n.name for n in yml] == [n.name for n in ini] == ["h1"]


# --- export and round trips --------------------------------------------------------------

NODE_SETS = {
    "bare": [Node(name="a", host="192.0.2.1")],
    "every-field": [
        Node(
            name="edge-01",
            host="cam.example.com",
            port=2222,
            user="edge",
            key="~/.ssh/id ed25519",
            groups=["cameras", "shanghai"],
            labels={"arch": "arm64", "room": "lab 2", "expr": "a=b=c", "empty": ""},
            workdir="/srv/edge work",
            connection="ssh",
        )
    ],
    "local-and-ipv6": [
        Node(name="local", host="localhost", connection="local"),
        Node(name="v6", host="2001:db8::1", user="root"),
    ],
    "awkward-text": [
        Node(
            name="q",
            host="h",
            key='C:\\keys\\"id"',
            labels={"note": 'say "hi" \\ bye', "city": "上海", "dotted.key": "x", "_u": "#1"},
        )
    ],
    "empty": [],
}


@pytest.mark.parametrize("format", EXPORT_FORMATS)
@pytest.mark.parametrize("case", sorted(NODE_SETS))
def test_export_reads_back_unchanged(format: str, case: str) -> None:
    nodes = NODE_SETS[case]
    text = dump_nodes(nodes, format)
    assert parse_text(text, format, f"export.{format}") == nodes
    assert parse_text(text, "auto", f"export.{format}") == nodes


def test_export_formats_are_import_formats() -> None:
    assert set(EXPORT_FORMATS) <= set(FORMATS)


def test_json_export_is_the_to_dict_shape() -> None:
    nodes = NODE_SETS["every-field"]
    assert json.loads(dump_nodes(nodes, "json")) == [n.to_dict() for n in nodes]


def test_toml_export_leaves_defaults_out() -> None:
    text = dump_nodes([Node(name="a", host="h")], "toml")
    assert "port" not in text and "workdir" not in text and "user" not in text


def test_csv_export_refuses_a_label_value_with_a_semicolon() -> None:
    nodes = [Node(name="a", host="h", labels={"cmd": "a;b"})]
    with pytest.raises(ValidationError, match="label cmd='a;b' cannot be written to CSV"):
        dump_nodes(nodes, "csv")
    assert parse_text(dump_nodes(nodes, "json"), "json") == nodes  # json carries it


def test_csv_export_refuses_surrounding_spaces_it_would_lose() -> None:
    with pytest.raises(ValidationError, match="cannot be written to CSV"):
        dump_nodes([Node(name="a", host="h", labels={"x": " padded"})], "csv")


@pytest.mark.parametrize("format", ["ansible", "ssh-config", "yaml"])
def test_export_to_an_import_only_format_is_refused(format: str) -> None:
    with pytest.raises(ValidationError, match="cannot export"):
        dump_nodes([], format)


def test_example_site_round_trips_through_every_export_format() -> None:
    site = load_nodes(str(EXAMPLES / "site.yml"))
    for format in EXPORT_FORMATS:
        assert parse_text(dump_nodes(site, format), format) == site
