"""nftables rendering and parsing for port profiles (pure)."""

from __future__ import annotations

import json

import pytest

from vmferry.errors import VmferryError
from vmferry.model.netprofile import AclProto, AclRule
from vmferry.netprofile import nft
from vmferry.netprofile.spec import make_profile

WEB = make_profile(
    "web",
    "vmnet",
    inbound_kib_s=1000,
    acl=["tcp:7,9@198.18.2.0/24", "icmp"],
    security_level="restricted",
)
MAC = "52:54:00:12:02:64"


def state_json(chains: dict[str, list[str]], ports: dict[str, str]) -> str:
    items: list[dict[str, object]] = [{"metainfo": {}}, {"table": {"name": "vmferry"}}]
    items.append(
        {
            "map": {
                "name": "ports",
                "elem": [
                    [{"elem": {"val": m, "comment": "vm"}}, {"jump": {"target": c}}]
                    for m, c in ports.items()
                ],
            }
        }
    )
    for chain, comments in chains.items():
        items.append({"chain": {"name": chain}})
        items.extend({"rule": {"chain": chain, "comment": c, "expr": []}} for c in comments)
    return json.dumps({"nftables": items})


def test_profile_rules_in_order() -> None:
    rules = nft.profile_rules(WEB)
    assert [c for _, c in rules] == [
        "vmf:profile web level=restricted acl=on in=1000",
        "vmf:arp",
        "vmf:tcp-replies",
        "vmf:acl tcp:7,9@198.18.2.0/24",
        "vmf:acl icmp",
        "vmf:drop",
    ]
    statements = [s for s, _ in rules]
    assert "ip protocol tcp tcp dport { 7, 9 } ip saddr 198.18.2.0/24 accept" in statements
    assert "ip protocol icmp accept" in statements
    assert statements[-1] == "drop"


def test_any_rule_and_no_acl() -> None:
    any_rule = make_profile("p", "n", acl=["any@10.0.0.0/8"])
    assert ("ether type ip ip saddr 10.0.0.0/8 accept", "vmf:acl any@10.0.0.0/8") in (
        nft.profile_rules(any_rule)
    )
    open_ = make_profile("p", "n")
    assert nft.profile_rules(open_) == (("counter", "vmf:profile p level=default acl=off"),)


def test_read_chain_round_trips() -> None:
    assert nft.read_chain(nft.profile_comments(WEB)) == ("restricted", WEB.acl)
    assert nft.read_chain(nft.profile_comments(make_profile("p", "n"))) == ("default", None)
    assert nft.read_chain(nft.profile_comments(make_profile("p", "n", acl=[]))) == ("default", ())
    assert nft.read_chain(()) is None
    assert nft.read_chain(("vmf:arp",)) is None


def test_parse_state() -> None:
    text = state_json(
        {"forward": ["vmf:ports"], "vmf-web": list(nft.profile_comments(WEB))},
        {MAC.upper(): "vmf-web"},
    )
    state = nft.parse_state(text)
    assert state.present
    assert state.ports == {MAC: "vmf-web"}
    assert state.chains["vmf-web"] == nft.profile_comments(WEB)
    assert state.macs_of("vmf-web") == (MAC,)
    assert nft.parse_state("") == nft.NftState()
    with pytest.raises(VmferryError):
        nft.parse_state("{not json")


def test_real_nft_json_shape() -> None:
    """As nft 1.0.6 prints it (trimmed)."""
    text = json.dumps(
        {
            "nftables": [
                {"metainfo": {"version": "1.0.6"}},
                {"table": {"family": "bridge", "name": "vmferry", "handle": 1}},
                {
                    "map": {
                        "family": "bridge",
                        "name": "ports",
                        "table": "vmferry",
                        "type": "ether_addr",
                        "map": "verdict",
                        "elem": [
                            [
                                {"elem": {"val": MAC, "comment": "web1"}},
                                {"jump": {"target": "vmf-web"}},
                            ]
                        ],
                    }
                },
                {"chain": {"family": "bridge", "table": "vmferry", "name": "forward", "handle": 1}},
                {
                    "rule": {
                        "family": "bridge",
                        "table": "vmferry",
                        "chain": "forward",
                        "handle": 4,
                        "comment": "vmf:ports",
                        "expr": [],
                    }
                },
                {
                    "rule": {
                        "chain": "vmf-web",
                        "comment": "vmf:profile web level=x acl=off",
                        "expr": [{"counter": {"packets": 0, "bytes": 0}}],
                    }
                },
                {"rule": {"chain": "vmf-web", "expr": [{"drop": None}]}},
            ]
        }
    )
    state = nft.parse_state(text)
    assert state.ports == {MAC: "vmf-web"}
    assert state.chains == {
        "forward": ("vmf:ports",),
        "vmf-web": ("vmf:profile web level=x acl=off",),
    }


def test_apply_on_an_empty_host_creates_everything() -> None:
    script = nft.apply_script(nft.NftState(), WEB, {MAC: "web1"})
    lines = script.splitlines()
    assert lines[0] == "add table bridge vmferry"
    assert "add map bridge vmferry ports { type ether_addr : verdict; }" in lines
    assert 'add rule bridge vmferry forward ether daddr vmap @ports comment "vmf:ports"' in lines
    assert (
        "add chain bridge vmferry vmf-web" in lines
        and "flush chain bridge vmferry vmf-web" in lines
    )
    assert (
        lines[-1] == f'add element bridge vmferry ports {{ {MAC} comment "web1" : jump vmf-web }}'
    )
    assert sum(1 for ln in lines if ln.startswith("add rule bridge vmferry vmf-web")) == 6


def test_apply_twice_changes_nothing_more() -> None:
    state = nft.NftState(
        True, {"forward": ("vmf:ports",), "vmf-web": nft.profile_comments(WEB)}, {MAC: "vmf-web"}
    )
    script = nft.apply_script(state, WEB, {MAC: "web1"})
    assert "vmf-web" not in script and "element" not in script
    assert "add rule bridge vmferry forward" not in script


def test_apply_rebinds_a_mac_and_rewrites_a_changed_chain() -> None:
    state = nft.NftState(
        True,
        {"forward": ("vmf:ports",), "vmf-web": ("vmf:profile web level=x acl=off",), "vmf-db": ()},
        {MAC: "vmf-db"},
    )
    lines = nft.apply_script(state, WEB, {MAC: "we b;1"}).splitlines()
    assert "flush chain bridge vmferry vmf-web" in lines
    assert f"delete element bridge vmferry ports {{ {MAC} }}" in lines
    assert lines[-1].endswith('comment "web1" : jump vmf-web }')  # the comment is sanitized


def test_remove_script() -> None:
    other = "52:54:00:12:02:65"
    state = nft.NftState(True, {"vmf-web": (), "vmf-db": ()}, {MAC: "vmf-web", other: "vmf-db"})
    assert nft.remove_script(state, (MAC.upper(),), ("web",)).splitlines() == [
        f"delete element bridge vmferry ports {{ {MAC} }}",
        "delete chain bridge vmferry vmf-web",
    ]
    # the chain stays while another MAC uses it
    shared = nft.NftState(True, {"vmf-web": ()}, {MAC: "vmf-web", other: "vmf-web"})
    assert nft.remove_script(shared, (MAC,), ("web",)).splitlines() == [
        f"delete element bridge vmferry ports {{ {MAC} }}"
    ]
    assert nft.remove_script(nft.NftState(), (MAC,), ("web",)) == ""
    assert nft.remove_script(state, ("52:54:00:00:00:01",), ("nothere",)) == ""


def test_acl_match_forms() -> None:
    assert nft._acl_match(AclRule(AclProto.UDP, (53,), "10.0.0.0/8")) == (
        "ip protocol udp udp dport { 53 } ip saddr 10.0.0.0/8"
    )
    assert nft._acl_match(AclRule(AclProto.TCP)) == "ip protocol tcp"


def test_rates_are_recorded_in_the_chain() -> None:
    rated = make_profile("p", "n", inbound_kib_s=2048, outbound_kib_s=1024, burst_kib=64)
    comments = nft.profile_comments(rated)
    assert comments[0] == "vmf:profile p level=default acl=off in=2048/64 out=1024/64"
    assert nft.read_rates(comments) == (rated.inbound, rated.outbound)
    assert nft.read_chain(comments) == ("default", None)
    assert nft.read_rates(nft.profile_comments(make_profile("p", "n"))) == (None, None)
    assert nft.read_rates(()) == (None, None)
