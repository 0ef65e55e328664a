"""Pre-flight rules for the network that must follow a VM: L2 segment and port profiles (pure).

The facts are gathered by :func:`vmferry.service.netprofile.gather_move_facts`; the same
facts always give the same findings. Ids (documented in docs/json.md and docs/network.md):

- ``network.segment-unreachable`` (blocker): the destination does not reach the NIC's L2
  segment; ``network.vni-mismatch`` (blocker): both hosts use VXLAN, with different VNIs;
  ``network.segment-unverified`` (warning). A reached segment adds no finding.
- ``netprofile.will-apply`` (info): the destination lacks (part of) the profile; vmferry
  creates it before the switchover (the same profile already there adds no finding).
  ``netprofile.conflict`` (blocker): it has a profile of that name that differs.
  ``netprofile.cannot-apply`` (blocker): it lacks the profile's rules and vmferry cannot
  write them there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from vmferry.model import Finding, Severity
from vmferry.model.finding import by_severity
from vmferry.model.netprofile import AclRule, L2Reach, PortProfile, VmPort

__all__ = ["MoveNetworkFacts", "PortMoveFacts", "apply_to_findings", "evaluate_network"]


@dataclass(frozen=True)
class PortMoveFacts:
    """One NIC of the VM, and what each side has of its profile.

    ``source_profile`` is the profile as the source host has it (its portgroup's bandwidth,
    and the ACL and level of vmferry's rules there); None when the NIC uses no portgroup.
    ``destination_portgroup`` is the destination's portgroup of that name as a profile
    (bandwidth only), or None; ``destination_rules`` the (level, ACL) of vmferry's rules for
    it on the destination, or None when there are none.
    """

    port: VmPort
    reach: L2Reach
    probe_detail: str = ""
    source_profile: PortProfile | None = None
    destination_has_network: bool = True
    destination_portgroup: PortProfile | None = None
    destination_rules: tuple[str, tuple[AclRule, ...] | None] | None = None
    source_vni: int | None = None
    destination_vni: int | None = None


@dataclass(frozen=True)
class MoveNetworkFacts:
    vm: str
    source: str
    destination: str
    ports: tuple[PortMoveFacts, ...]
    can_write_rules: bool  # vmferry can run nft on the destination (a lab host today)


def evaluate_network(facts: MoveNetworkFacts) -> list[Finding]:
    findings = [f for p in facts.ports for f in _segment(facts, p)]
    findings += [f for p in facts.ports for f in _profile(facts, p)]
    order = {Severity.BLOCKER: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return sorted(findings, key=lambda f: order[f.severity])


def _segment(f: MoveNetworkFacts, p: PortMoveFacts) -> Iterator[Finding]:
    port, dest = p.port, f.destination
    seg = port.segment
    where = f"{seg.network or '-'}/{seg.bridge or '-'}"
    if (
        p.source_vni is not None
        and p.destination_vni is not None
        and (p.source_vni != p.destination_vni)
    ):
        yield Finding(
            "network.vni-mismatch",
            Severity.BLOCKER,
            f"NIC {port.mac} is on VXLAN VNI {p.source_vni} on {f.source}, but {dest}'s bridge "
            f"carries VNI {p.destination_vni}",
            f"extend VNI {p.source_vni} to {dest} (add it to {dest}'s VTEP and bridge), or "
            "plan a re-addressing of the VM for the segment of VNI "
            f"{p.destination_vni}",
        )
    if p.reach is L2Reach.UNREACHED:
        yield Finding(
            "network.segment-unreachable",
            Severity.BLOCKER,
            f"NIC {port.mac} ({where}): {dest} does not reach the VM's L2 segment "
            f"({p.probe_detail or 'no answer to an ARP probe'})",
            f"extend the segment to {dest} (connect its {seg.bridge or 'bridge'} uplink to the "
            "same switch, VLAN or VXLAN VNI as the source's), or plan a re-addressing: give "
            f"the VM an address on {dest}'s segment and update its clients; nothing was changed",
        )
    elif p.reach is L2Reach.UNVERIFIED:
        yield Finding(
            "network.segment-unverified",
            Severity.WARNING,
            f"NIC {port.mac} ({where}): vmferry could not verify that {dest} reaches the VM's "
            f"L2 segment ({p.probe_detail or 'no probe possible'})",
            f"check that {dest}'s {seg.bridge or 'bridge'} is on the same L2 segment",
        )


def _profile(f: MoveNetworkFacts, p: PortMoveFacts) -> Iterator[Finding]:
    src, port, dest = p.source_profile, p.port, f.destination
    if src is None or not p.destination_has_network:
        return  # no profile, or network.missing already blocks
    differences = []
    pg = p.destination_portgroup
    rules = p.destination_rules
    # where vmferry shapes itself, the destination's rates are those of its rules (none yet
    # when the rules are missing); elsewhere they are the portgroup's <bandwidth>
    rates_known = rules is not None or not f.can_write_rules
    if pg is not None and rates_known and (pg.inbound, pg.outbound) != (src.inbound, src.outbound):
        differences.append("its rate limits differ")
    if rules is not None and rules != (src.security_level, src.acl):
        differences.append("its ACL or security level differ")
    if differences:
        yield Finding(
            "netprofile.conflict",
            Severity.BLOCKER,
            f"NIC {port.mac} uses profile {src.name!r}; {dest} has a profile of that name, but "
            + " and ".join(differences),
            f"align it (`vmferry netprofile apply {src.name} --host {dest}`, which changes it "
            f"for every VM on {dest} that uses it) or give the VM's profile another name",
        )
        return
    need_pg = pg is None
    shaped = src.inbound is not None or src.outbound is not None
    need_rules = rules is None and (src.acl is not None or (shaped and f.can_write_rules))
    if need_rules and not f.can_write_rules:
        yield Finding(
            "netprofile.cannot-apply",
            Severity.BLOCKER,
            f"NIC {port.mac} uses profile {src.name!r} with an ACL; {dest} lacks its rules and "
            "vmferry cannot write nftables rules there",
            f"apply the profile on {dest} yourself (nftables table `bridge vmferry`, see "
            f"docs/network.md), then check again",
        )
        return
    if need_pg or need_rules:
        what = " and ".join(
            w
            for w, needed in (
                ("portgroup", need_pg),
                ("ACL rules" if src.acl is not None else "rate limits", need_rules),
            )
            if needed
        )
        yield Finding(
            "netprofile.will-apply",
            Severity.INFO,
            f"NIC {port.mac} uses profile {src.name!r}; {dest} lacks its {what}, which vmferry "
            "creates before the switchover (and removes again if the move fails)",
        )


def apply_to_findings(base: list[Finding], facts: MoveNetworkFacts) -> list[Finding]:
    """The pre-flight findings with the network ones added. ``network.portgroup-missing`` is
    dropped for a NIC whose profile vmferry will create on the destination (the
    ``netprofile.will-apply`` finding says so instead)."""
    extra = evaluate_network(facts)
    will_apply = {
        p.port.mac
        for p in facts.ports
        if any(f.id == "netprofile.will-apply" and p.port.mac in f.message for f in extra)
    }
    kept = [
        f
        for f in base
        if not (f.id == "network.portgroup-missing" and any(m in f.message for m in will_apply))
    ]
    return by_severity(kept + extra)
