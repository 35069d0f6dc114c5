"""Every value that reaches shells, paths and logs is checked at the door."""

from __future__ import annotations

import pytest

from edgectl.errors import ValidationError
from edgectl.inventory.model import Node, parse_label

GOOD = dict(name="cam-01", host="192.0.2.10")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "invalid node name"),
        ("name", "-rf", "invalid node name"),
        ("name", "a;b", "invalid node name"),
        ("name", "a b", "invalid node name"),
        ("name", "$(id)", "invalid node name"),
        ("name", "`id`", "invalid node name"),
        ("name", "a/b", "invalid node name"),
        ("name", "..", "invalid node name"),
        ("name", "x" * 65, "invalid node name"),
        ("name", "all", "reserved"),
        ("name", "caf\u00e9", "invalid node name"),
        ("host", "-oProxyCommand=id", "invalid host"),
        ("host", "a;b", "invalid host"),
        ("host", "host name", "invalid host"),
        ("host", "", "invalid host"),
        ("host", "a..b", "invalid host"),
        ("port", 0, "invalid port"),
        ("port", 65536, "invalid port"),
        ("port", "22x", "invalid port"),
        ("user", "-l", "invalid user"),
        ("user", "ro ot", "invalid user"),
        ("user", "a'b", "invalid user"),
        ("key", "-i", "invalid key path"),
        ("key", "a\nb", "invalid key path"),
        ("workdir", "", "invalid workdir"),
        ("workdir", "~/x\x1b[31m", "invalid workdir"),
        ("connection", "telnet", "invalid connection"),
        ("groups", ["ok", "bad group"], "invalid group name"),
        ("labels", {"9x": "1"}, "invalid label key"),
        ("labels", {"k": "v\n"}, "invalid value for label"),
        ("labels", {"k": "v" * 300}, "invalid value for label"),
    ],
)
def test_bad_values_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Node(**{**GOOD, field: value})  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)  # one line, control characters escaped


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("host", "2001:db8::1", "2001:db8::1"),
        ("host", "[2001:db8::1]", "2001:db8::1"),
        ("host", "edge-01.example.com", "edge-01.example.com"),
        ("port", "2222", 2222),
        ("groups", ["b", "a", "b"], ["a", "b"]),
        ("labels", {"z": "1", "a": "x y=z"}, {"a": "x y=z", "z": "1"}),
        ("user", "edge_admin", "edge_admin"),
        ("key", "~/.ssh/id ed25519", "~/.ssh/id ed25519"),
    ],
)
def test_good_values_are_normalised(field: str, value: object, stored: object) -> None:
    node = Node(**{**GOOD, field: value})  # type: ignore[arg-type]
    assert getattr(node, field) == stored


def test_round_trip_through_dict() -> None:
    node = Node(
        name="a", host="192.0.2.1", port=2200, user="u", key="/k", groups=["g"], labels={"k": "v"}
    )
    assert Node.from_dict(node.to_dict()) == node


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown node field"):
        Node.from_dict({"name": "a", "host": "192.0.2.1", "passwd": "x"})


def test_parse_label() -> None:
    assert parse_label("site = shanghai ") == ("site", "shanghai")
    assert parse_label("expr=a=b") == ("expr", "a=b")
    with pytest.raises(ValidationError, match="key=value"):
        parse_label("novalue")
