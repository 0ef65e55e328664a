"""Pre-flight rules for segments and port profiles (assess.network)."""

from __future__ import annotations

from dataclasses import replace

from vmferry.assess.network import (
    MoveNetworkFacts,
    PortMoveFacts,
    apply_to_findings,
    evaluate_network,
)
from vmferry.model import Finding, Severity
from vmferry.model.netprofile import Bandwidth, L2Reach, Segment, VmPort
from vmferry.netprofile.spec import make_profile

MAC = "52:54:00:12:02:64"
PORT = VmPort("web1", MAC, Segment("vmnet", None), "web", addresses=("198.18.2.100",))
WEB = make_profile("web", "vmnet", inbound_kib_s=1000, acl=["tcp:7"], security_level="restricted")
PG = make_profile("web", "vmnet", inbound_kib_s=1000)


def facts(*ports: PortMoveFacts, can_write: bool = True) -> MoveNetworkFacts:
    return MoveNetworkFacts("web1", "kvm1", "kvm2", ports, can_write)


def port(**kw: object) -> PortMoveFacts:
    base = PortMoveFacts(PORT, L2Reach.REACHED, "ARP answered", source_profile=WEB)
    return replace(base, **kw)  # type: ignore[arg-type]


def ids(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.id, f.severity.value) for f in findings]


def test_reached_and_nothing_on_the_destination_will_apply() -> None:
    found = evaluate_network(facts(port()))
    assert ids(found) == [("netprofile.will-apply", "info")]
    assert "portgroup and ACL rules" in found[0].message


def test_everything_there_gives_no_finding() -> None:
    assert (
        evaluate_network(
            facts(port(destination_portgroup=PG, destination_rules=("restricted", WEB.acl)))
        )
        == []
    )


def test_only_rules_missing() -> None:
    found = evaluate_network(facts(port(destination_portgroup=PG)))
    assert ids(found) == [("netprofile.will-apply", "info")]
    assert "lacks its ACL rules" in found[0].message


def test_segment_unreachable_blocks_with_both_remedies() -> None:
    found = evaluate_network(facts(port(reach=L2Reach.UNREACHED, probe_detail="no answer")))
    assert ids(found)[0] == ("network.segment-unreachable", "blocker")
    assert "extend the segment" in found[0].remediation
    assert "re-addressing" in found[0].remediation
    assert "no answer" in found[0].message


def test_segment_unverified_warns() -> None:
    found = evaluate_network(facts(port(reach=L2Reach.UNVERIFIED, source_profile=None)))
    assert ids(found) == [("network.segment-unverified", "warning")]


def test_vni_mismatch_blocks_and_equal_vnis_pass() -> None:
    found = evaluate_network(facts(port(source_vni=100, destination_vni=200, source_profile=None)))
    assert ids(found) == [("network.vni-mismatch", "blocker")]
    assert (
        evaluate_network(facts(port(source_vni=100, destination_vni=100, source_profile=None)))
        == []
    )
    assert evaluate_network(facts(port(source_vni=100, source_profile=None))) == []


def test_conflicting_profile_blocks() -> None:
    other_rate = make_profile("web", "vmnet", inbound_kib_s=9)
    rules = ("restricted", WEB.acl)
    found = evaluate_network(facts(port(destination_portgroup=other_rate, destination_rules=rules)))
    assert ids(found) == [("netprofile.conflict", "blocker")]
    assert "rate limits differ" in found[0].message
    # where vmferry shapes, a portgroup without its rules has no rates yet: it will apply
    found = evaluate_network(facts(port(destination_portgroup=other_rate)))
    assert ids(found) == [("netprofile.will-apply", "info")]
    # where libvirt shapes, the portgroup's <bandwidth> is the rate
    found = evaluate_network(facts(port(destination_portgroup=other_rate), can_write=False))
    assert ids(found) == [("netprofile.conflict", "blocker")]
    found = evaluate_network(
        facts(port(destination_portgroup=PG, destination_rules=("default", WEB.acl)))
    )
    assert "ACL or security level differ" in found[0].message
    assert "netprofile apply web --host kvm2" in found[0].remediation


def test_rules_cannot_be_written() -> None:
    found = evaluate_network(facts(port(destination_portgroup=PG), can_write=False))
    assert ids(found) == [("netprofile.cannot-apply", "blocker")]
    # without an ACL there are no rules to write: the portgroup alone will do
    no_acl = make_profile("web", "vmnet", inbound_kib_s=1000)
    found = evaluate_network(facts(port(source_profile=no_acl), can_write=False))
    assert ids(found) == [("netprofile.will-apply", "info")]


def test_no_profile_or_missing_network_adds_nothing() -> None:
    assert evaluate_network(facts(port(source_profile=None))) == []
    assert evaluate_network(facts(port(destination_has_network=False))) == []


def test_portgroup_missing_is_replaced_by_will_apply() -> None:
    base = [
        Finding("network.portgroup-missing", Severity.BLOCKER, f"NIC {MAC} uses portgroup 'web'"),
        Finding("network.portgroup-missing", Severity.BLOCKER, "NIC 52:54:00:00:00:09 uses ..."),
        Finding("storage.copy", Severity.INFO, "x"),
    ]
    merged = apply_to_findings(base, facts(port()))
    assert ids(merged) == [
        ("network.portgroup-missing", "blocker"),
        ("storage.copy", "info"),
        ("netprofile.will-apply", "info"),
    ]
    # when the profile cannot be applied, the original blocker stays
    kept = apply_to_findings(base[:1], facts(port(), can_write=False))
    assert ("network.portgroup-missing", "blocker") in ids(kept)


def test_bandwidth_equality_is_exact() -> None:
    assert Bandwidth(1000) != Bandwidth(1000, None, 64)


def test_rates_alone_need_rules_where_vmferry_shapes() -> None:
    rated = make_profile("web", "vmnet", inbound_kib_s=2048, outbound_kib_s=2048)
    no_rates = make_profile("web", "vmnet")
    found = evaluate_network(facts(port(source_profile=rated, destination_portgroup=no_rates)))
    assert ids(found) == [("netprofile.will-apply", "info")]
    assert "lacks its rate limits" in found[0].message
    there = port(
        source_profile=rated, destination_portgroup=rated, destination_rules=("default", None)
    )
    assert evaluate_network(facts(there)) == []
