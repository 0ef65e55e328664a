"""Profile names, ACL rule strings and the JSON form of a profile."""

from __future__ import annotations

import pytest

from vmferry.errors import BadInputError
from vmferry.model.netprofile import AclProto, AclRule, Bandwidth, PortProfile
from vmferry.netprofile.spec import (
    describe,
    format_acl_rule,
    make_profile,
    parse_acl_rule,
    profile_from_json,
    profile_to_json,
)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("tcp:7,9@198.18.2.0/24", AclRule(AclProto.TCP, (7, 9), "198.18.2.0/24")),
        ("TCP:9,7,7", AclRule(AclProto.TCP, (7, 9))),
        ("udp:53", AclRule(AclProto.UDP, (53,))),
        ("icmp", AclRule(AclProto.ICMP)),
        ("any@10.0.0.1", AclRule(AclProto.ANY, (), "10.0.0.1/32")),
        ("tcp@198.18.2.7/24", AclRule(AclProto.TCP, (), "198.18.2.0/24")),
    ],
)
def test_acl_rules_parse_and_format_back(text: str, rule: AclRule) -> None:
    assert parse_acl_rule(text) == rule
    assert parse_acl_rule(format_acl_rule(rule)) == rule


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sctp:1",
        "tcp:0",
        "tcp:65536",
        "tcp:x",
        "icmp:8",
        "any:80",
        "tcp@nowhere",
        "tcp@2001:db8::/32",
    ],
)
def test_bad_acl_rules_are_bad_input(text: str) -> None:
    with pytest.raises(BadInputError):
        parse_acl_rule(text)


@pytest.mark.parametrize("name", ["Web", "-web", "a" * 25, "we b", "web_1", ""])
def test_bad_profile_names(name: str) -> None:
    with pytest.raises(BadInputError):
        make_profile(name, "vmnet")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"inbound_kib_s": 0},
        {"outbound_kib_s": 4_000_001},
        {"burst_kib": 0},
        {"vni": 0},
        {"vni": 1 << 24},
        {"security_level": "Top Secret"},
        {"acl": ["tcp:1"] * 33},
    ],
)
def test_bad_profile_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(BadInputError):
        make_profile("web", "vmnet", **kwargs)  # type: ignore[arg-type]


def test_make_profile_and_json_round_trip() -> None:
    profile = make_profile(
        "web",
        "vmnet",
        inbound_kib_s=1000,
        outbound_kib_s=500,
        burst_kib=64,
        acl=["tcp:7", "icmp"],
        security_level="restricted",
        vni=42,
    )
    assert profile == PortProfile(
        "web",
        "vmnet",
        Bandwidth(1000, None, 64),
        Bandwidth(500, None, 64),
        (AclRule(AclProto.TCP, (7,)), AclRule(AclProto.ICMP)),
        "restricted",
        42,
    )
    data = profile_to_json(profile)
    assert data["acl"] == ["tcp:7", "icmp"]
    assert profile_from_json(data) == profile
    assert describe(profile) == (
        "web (vmnet): in 1000 KiB/s, out 500 KiB/s, ACL tcp:7 icmp, level restricted"
    )


def test_no_acl_and_empty_acl_differ() -> None:
    open_ = make_profile("web", "vmnet")
    closed = make_profile("web", "vmnet", acl=[])
    assert open_.acl is None and closed.acl == ()
    assert profile_from_json(profile_to_json(open_)) == open_
    assert profile_from_json(profile_to_json(closed)) == closed
    assert "ACL (none)" in describe(closed) and "ACL" not in describe(open_)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"name": "web"},
        {"name": "BAD", "network": "n"},
        {"name": "web", "network": "n", "inbound": {"peak_kib_s": 1}},
        {"name": "web", "network": "n", "acl": ["bogus"]},
    ],
)
def test_unreadable_json_is_bad_input(data: dict[str, object]) -> None:
    with pytest.raises(BadInputError):
        profile_from_json(data)
