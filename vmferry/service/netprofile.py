"""`vmferry netprofile ...` and the network half of `vmferry migrate`.

Named profiles are kept as JSON files, one per profile, in ``$VMFERRY_NETPROFILES`` (default
``<vmferry data dir>/netprofiles``). On a host, a profile is a portgroup of the same name in
its libvirt network (with the rate limits; libvirt applies them with tc on the VM's tap) plus
a chain in vmferry's nftables table ``bridge vmferry`` (the ACL), with the VM's MAC bound to
it. vmferry writes nftables rules only where it can run commands on the host: the lab hosts
(network namespaces on this machine).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from platformdirs import user_data_dir

from vmferry.assess.network import MoveNetworkFacts, PortMoveFacts
from vmferry.drivers import bridge, libvirt_network, nft
from vmferry.drivers.host_exec import HostExec
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import BadInputError, NotFoundError, VmferryError
from vmferry.lab import topology as topo
from vmferry.lab.state import load_state
from vmferry.model import Host
from vmferry.model.netprofile import AclRule, L2Reach, PortProfile, VmPort
from vmferry.netprofile import nft as nft_rules
from vmferry.netprofile.fdb import FdbVerdict, fdb_verdict
from vmferry.netprofile.libvirt_xml import (
    NetworkView,
    network_view,
    portgroup_xml,
    ports_from_domain,
)
from vmferry.netprofile.spec import check_name, profile_from_json, profile_to_json
from vmferry.service.locate import locate
from vmferry.store.db import Store, open_store

NoteFn = Callable[[str], None]
DIR_ENV_VAR = "VMFERRY_NETPROFILES"
Rules = tuple[str, tuple[AclRule, ...] | None]


def _quiet(_message: str) -> None:
    return None


# -- named profiles ---------------------------------------------------------------------


def profiles_dir() -> Path:
    from_env = os.environ.get(DIR_ENV_VAR, "").strip()
    return Path(from_env) if from_env else Path(user_data_dir("vmferry")) / "netprofiles"


def list_profiles() -> list[PortProfile]:
    folder = profiles_dir()
    if not folder.is_dir():
        return []
    return [profile_from_json(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]


def get_profile(name: str) -> PortProfile:
    path = profiles_dir() / f"{check_name(name)}.json"
    if not path.exists():
        raise NotFoundError(f"no port profile {name!r}; `vmferry netprofile list` lists them")
    return profile_from_json(json.loads(path.read_text()))


def save_profile(profile: PortProfile) -> Path:
    folder = profiles_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{profile.name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(profile_to_json(profile), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def delete_profile(name: str) -> None:
    path = profiles_dir() / f"{check_name(name)}.json"
    if not path.exists():
        raise NotFoundError(f"no port profile {name!r}")
    path.unlink()


# -- hosts ------------------------------------------------------------------------------


def host_exec(host: str) -> HostExec | None:
    """How to run network commands on ``host``: its namespace for a lab host, else None."""
    state = load_state()
    if state is None or host not in state.registered_hosts:
        return None
    return HostExec.for_namespace(host, f"{topo.NS_PREFIX}{host}")


def read_host_profile(
    conn: LibvirtHost, hexec: HostExec | None, network: str, name: str
) -> tuple[PortProfile | None, Rules | None]:
    """The profile ``name`` as ``conn``'s host has it: (its portgroup as a profile, or None;
    (level, ACL) of vmferry's rules for it, or None)."""
    xml = libvirt_network.network_xml(conn, network)
    view = network_view(xml) if xml is not None else None
    pg = view.portgroups.get(name) if view is not None else None
    portgroup = PortProfile(name, network, pg.inbound, pg.outbound) if pg is not None else None
    rules = None
    if hexec is not None:
        comments = nft.read_state(hexec).chains.get(nft_rules.chain_name(name))
        rules = nft_rules.read_chain(comments) if comments else None
    return portgroup, rules


def _combine(portgroup: PortProfile, rules: Rules | None) -> PortProfile:
    if rules is None:
        return portgroup
    level, acl = rules
    return replace(portgroup, security_level=level, acl=acl)


@dataclass(frozen=True)
class CaptureReport:
    vm: str
    host: str
    ports: tuple[VmPort, ...]
    profiles: tuple[PortProfile, ...]


def capture(vm: str, *, save: bool = True) -> CaptureReport:
    """Read the profiles of ``vm``'s NICs from the host it runs on and keep them by name."""
    store = open_store()
    location = locate(vm, store.list_hosts())
    host = location.host
    hexec = host_exec(host.name)
    with LibvirtHost.connect(host.name, host.uri) as conn:
        ports = _ports_with_addresses(conn.domain_xml(vm))
        profiles = []
        for port in ports:
            if port.profile is None or port.segment.network is None:
                continue
            portgroup, rules = read_host_profile(conn, hexec, port.segment.network, port.profile)
            if portgroup is None:
                raise NotFoundError(
                    f"{vm}'s NIC {port.mac} uses portgroup {port.profile!r}, "
                    f"which network {port.segment.network!r} on {host.name} "
                    "does not have"
                )
            profile = _combine(portgroup, rules)
            if hexec is not None and port.segment.bridge is None:
                profile = replace(profile, vni=_bridge_vni(conn, hexec, port))
            profiles.append(profile)
    if save:
        for profile in profiles:
            save_profile(profile)
    return CaptureReport(vm, host.name, ports, tuple(profiles))


def _bridge_vni(conn: LibvirtHost, hexec: HostExec, port: VmPort) -> int | None:
    view = _view(conn, port.segment.network)
    return bridge.vni(hexec, view.bridge) if view is not None and view.bridge else None


def _view(conn: LibvirtHost, network: str | None) -> NetworkView | None:
    if network is None:
        return None
    xml = libvirt_network.network_xml(conn, network)
    return network_view(xml) if xml is not None else None


def _ports_with_addresses(domain_xml: str) -> tuple[VmPort, ...]:
    """The domain's ports with the addresses seen for their MACs (the lab client's neighbour
    table) or declared (a lab guest's address)."""
    ports = ports_from_domain(domain_xml)
    seen: dict[str, set[str]] = {}
    state = load_state()
    if state is not None and state.status == "up":
        client = HostExec.for_namespace("client", topo.CLIENT_NS)
        try:
            for mac, addrs in bridge.neighbours(client).items():
                seen.setdefault(mac, set()).update(addrs)
        except VmferryError:
            pass
        for guest in state.guests.values():
            seen.setdefault(guest.mac.lower(), set()).add(guest.address)
    return tuple(replace(p, addresses=tuple(sorted(seen.get(p.mac, set())))) for p in ports)


# -- apply / remove ---------------------------------------------------------------------


@dataclass
class ApplyReport:
    """What applying a profile on one host changed (for the undo)."""

    host: str
    profile: str
    network: str
    portgroup: str  # "added" | "modified" | "unchanged"
    rules: str  # "written" | "unchanged" | "none" | "not-possible"
    bound_macs: tuple[str, ...] = ()
    chain_was_there: bool = True
    notes: list[str] = field(default_factory=list)


def apply_on(
    conn: LibvirtHost,
    hexec: HostExec | None,
    profile: PortProfile,
    macs: dict[str, str],
) -> ApplyReport:
    """Make ``conn``'s host have ``profile``: the portgroup with its rate limits (added, or
    modified if it differs) and, where vmferry can run nft there, its rules with ``macs``
    (mac -> VM) bound. Idempotent."""
    xml = libvirt_network.network_xml(conn, profile.network)
    if xml is None:
        raise NotFoundError(f"host {conn.name!r} has no network {profile.network!r}")
    view = network_view(xml)
    pg = view.portgroups.get(profile.name)
    new_pg = portgroup_xml(profile.name, profile.inbound, profile.outbound)
    if pg is None:
        libvirt_network.add_portgroup(conn, profile.network, new_pg)
        pg_done = "added"
    elif (pg.inbound, pg.outbound) != (profile.inbound, profile.outbound):
        libvirt_network.modify_portgroup(conn, profile.network, new_pg)
        pg_done = "modified"
    else:
        pg_done = "unchanged"
    report = ApplyReport(conn.name, profile.name, profile.network, pg_done, "none")
    if hexec is None:
        report.rules = "not-possible" if profile.acl is not None else "none"
        return report
    before = nft.read_state(hexec)
    chain = nft_rules.chain_name(profile.name)
    report.chain_was_there = chain in before.chains
    changed = before.chains.get(chain) != nft_rules.profile_comments(profile) or any(
        before.ports.get(m) != chain for m in macs
    )
    nft.apply_profile(hexec, profile, macs)
    report.rules = "written" if changed else "unchanged"
    report.bound_macs = tuple(sorted(m for m in macs if before.ports.get(m) != chain))
    return report


def apply(name: str, host_name: str) -> ApplyReport:
    """`vmferry netprofile apply NAME --host H`: the named profile on ``host_name``, with the
    MACs of the VMs defined there that use it bound to its rules."""
    profile = get_profile(name)
    host = open_store().get_host(host_name)
    with LibvirtHost.connect(host.name, host.uri) as conn:
        macs = {
            p.mac: p.vm
            for xml in libvirt_network.domain_xmls(conn).values()
            for p in ports_from_domain(xml)
            if p.profile == profile.name and p.segment.network == profile.network
        }
        return apply_on(conn, host_exec(host.name), profile, macs)


def remove_from(
    conn: LibvirtHost,
    hexec: HostExec | None,
    profile: PortProfile,
    macs: tuple[str, ...],
    *,
    portgroup: bool,
    keep_if_used_by_other_vms: str | None = None,
) -> list[str]:
    """Unbind ``macs``, drop the profile's chain if nothing uses it, and (``portgroup``) the
    portgroup if no domain defined on the host (other than ``keep_if_used_by_other_vms``'s
    VM, if named) still uses it. Returns what was removed."""
    done = []
    if hexec is not None and nft.remove(hexec, macs, (profile.name,)):
        done.append(f"rules of {profile.name} for {', '.join(macs)}")
    if portgroup:
        users = [
            p.vm
            for xml in libvirt_network.domain_xmls(conn).values()
            for p in ports_from_domain(xml)
            if p.profile == profile.name and p.vm != keep_if_used_by_other_vms
        ]
        view = _view(conn, profile.network)
        if not users and view is not None and profile.name in view.portgroups:
            libvirt_network.delete_portgroup(conn, profile.network, profile.name)
            done.append(f"portgroup {profile.name} of {profile.network}")
    return done


def remove(name: str, host_name: str) -> list[str]:
    """`vmferry netprofile remove NAME --host H` (refused while a VM there uses it)."""
    profile = get_profile(name)
    host = open_store().get_host(host_name)
    with LibvirtHost.connect(host.name, host.uri) as conn:
        users = sorted(
            {
                p.vm
                for xml in libvirt_network.domain_xmls(conn).values()
                for p in ports_from_domain(xml)
                if p.profile == name
            }
        )
        if users:
            raise BadInputError(f"profile {name!r} is in use on {host_name} by {', '.join(users)}")
        return remove_from(conn, host_exec(host.name), profile, (), portgroup=True)


# -- pre-flight -------------------------------------------------------------------------


def gather_move_facts(
    src: LibvirtHost, dst: LibvirtHost, vm: str, source: str, destination: str
) -> MoveNetworkFacts:
    """What the network rules (:mod:`vmferry.assess.network`) need. Changes nothing (the
    ARP probe changes no neighbour cache)."""
    src_exec, dst_exec = host_exec(source), host_exec(destination)
    ports = _ports_with_addresses(src.domain_xml(vm))
    facts = []
    for port in ports:
        dst_view = _view(dst, port.segment.network)
        bridge_name = port.segment.bridge or (dst_view.bridge if dst_view else None)
        reach, detail = _reach(dst_exec, bridge_name, port)
        src_profile = None
        dst_pg: PortProfile | None = None
        dst_rules = None
        if port.profile is not None and port.segment.network is not None:
            pg, rules = read_host_profile(src, src_exec, port.segment.network, port.profile)
            src_profile = _combine(pg, rules) if pg is not None else None
            if dst_view is not None:
                dst_pg, dst_rules = read_host_profile(
                    dst, dst_exec, port.segment.network, port.profile
                )
        src_view = _view(src, port.segment.network)
        facts.append(
            PortMoveFacts(
                port=port,
                reach=reach,
                probe_detail=detail,
                source_profile=src_profile,
                destination_has_network=port.segment.network is None or dst_view is not None,
                destination_portgroup=dst_pg,
                destination_rules=dst_rules,
                source_vni=_vni(src_exec, src_view.bridge if src_view else port.segment.bridge),
                destination_vni=_vni(dst_exec, bridge_name),
            )
        )
    return MoveNetworkFacts(vm, source, destination, tuple(facts), dst_exec is not None)


def _vni(hexec: HostExec | None, bridge_name: str | None) -> int | None:
    if hexec is None or not bridge_name:
        return None
    try:
        return bridge.vni(hexec, bridge_name)
    except VmferryError:
        return None


def _reach(hexec: HostExec | None, bridge_name: str | None, port: VmPort) -> tuple[L2Reach, str]:
    if hexec is None:
        return L2Reach.UNVERIFIED, "vmferry can probe the segment only from lab hosts"
    if not bridge_name:
        return L2Reach.UNVERIFIED, "the destination's network names no bridge"
    v4 = [a for a in port.addresses if ":" not in a]
    if not v4:
        return L2Reach.UNVERIFIED, f"no IPv4 address seen for {port.mac}"
    reached, detail = bridge.arp_probe(hexec, bridge_name, v4[0])
    return (L2Reach.REACHED if reached else L2Reach.UNREACHED), detail


# -- during a migration -----------------------------------------------------------------


@dataclass
class NetworkMove:
    """What :func:`prepare_destination` did, so that :func:`finish_move` can undo or clean."""

    vm: str
    source: Host
    destination: Host
    ports: tuple[VmPort, ...] = ()
    profiles: dict[str, PortProfile] = field(default_factory=dict)
    applied: list[ApplyReport] = field(default_factory=list)


def prepare_destination(
    vm: str, source: Host, destination: Host, store: Store, job_id: str, note: NoteFn = _quiet
) -> NetworkMove:
    """Before the migration starts: put every profile of ``vm``'s NICs on the destination
    (portgroup with rate limits, ACL rules keyed on the VM's MAC)."""
    move = NetworkMove(vm, source, destination)
    src_exec, dst_exec = host_exec(source.name), host_exec(destination.name)
    with (
        LibvirtHost.connect(source.name, source.uri) as src,
        LibvirtHost.connect(destination.name, destination.uri) as dst,
    ):
        move.ports = _ports_with_addresses(src.domain_xml(vm))
        try:
            for port in move.ports:
                if port.profile is None or port.segment.network is None:
                    continue
                pg, rules = read_host_profile(src, src_exec, port.segment.network, port.profile)
                if pg is None:
                    continue
                profile = _combine(pg, rules)
                move.profiles[port.mac] = profile
                report = apply_on(dst, dst_exec, profile, {port.mac: vm})
                move.applied.append(report)
                message = (
                    f"profile {profile.name} on {destination.name}: portgroup "
                    f"{report.portgroup}, rules {report.rules}"
                )
                store.add_event(
                    job_id,
                    "network",
                    message,
                    {
                        "profile": profile_to_json(profile),
                        "mac": port.mac,
                        "portgroup": report.portgroup,
                        "rules": report.rules,
                    },
                )
                note(message)
        except BaseException:
            _undo_destination(move, dst, dst_exec, store, job_id, note)
            raise
    return move


def _undo_destination(
    move: NetworkMove,
    dst: LibvirtHost,
    dst_exec: HostExec | None,
    store: Store,
    job_id: str,
    note: NoteFn,
) -> None:
    for report in reversed(move.applied):
        profile = next(p for p in move.profiles.values() if p.name == report.profile)
        try:
            removed = []
            drop = () if report.chain_was_there else (profile.name,)
            if (
                dst_exec is not None
                and report.bound_macs
                and nft.remove(dst_exec, report.bound_macs, drop)
            ):
                removed.append(f"rules for {', '.join(report.bound_macs)}")
            if report.portgroup == "added":
                libvirt_network.delete_portgroup(dst, profile.network, profile.name)
                removed.append(f"portgroup {profile.name}")
            message = (
                f"removed from {dst.name} after the failed move: "
                f"{'; '.join(removed) or 'nothing to remove'}"
            )
        except VmferryError as exc:
            message = f"could not remove profile {profile.name} from {dst.name}: {exc.message}"
        store.add_event(job_id, "network", message, {"host": dst.name, "undo": True})
        note(message)


def finish_move(
    move: NetworkMove, moved: bool, store: Store, job_id: str, note: NoteFn = _quiet
) -> FdbVerdict | None:
    """After the migration: if it moved, check that the network learned the new location and
    remove the profiles from the source; if not, remove what was added on the destination."""
    src_exec, dst_exec = host_exec(move.source.name), host_exec(move.destination.name)
    try:
        if not moved:
            with LibvirtHost.connect(move.destination.name, move.destination.uri) as dst:
                _undo_destination(move, dst, dst_exec, store, job_id, note)
            return None
        verdict = _learned(move, src_exec, dst_exec, store, job_id, note)
        with LibvirtHost.connect(move.source.name, move.source.uri) as src:
            for mac, profile in move.profiles.items():
                removed = remove_from(
                    src,
                    src_exec,
                    profile,
                    (mac,),
                    portgroup=True,
                    keep_if_used_by_other_vms=move.vm,
                )
                message = (
                    f"removed from {move.source.name}: "
                    f"{'; '.join(removed) or 'nothing (still used there)'}"
                )
                store.add_event(job_id, "network", message, {"host": move.source.name})
                note(message)
        return verdict
    except VmferryError as exc:
        store.add_event(job_id, "note", f"network clean-up incomplete: {exc.message}", {})
        note(f"network clean-up incomplete: {exc.message}")
        return None


def _learned(
    move: NetworkMove,
    src_exec: HostExec | None,
    dst_exec: HostExec | None,
    store: Store,
    job_id: str,
    note: NoteFn,
    wait_s: float = 3.0,
) -> FdbVerdict | None:
    """Poll both bridges' FDB (up to ``wait_s``) until the MAC is on the destination's VM port
    and the source no longer claims it; record the verdict and the MACs the VM has there."""
    if src_exec is None or dst_exec is None:
        return None
    verdict: FdbVerdict | None = None
    with LibvirtHost.connect(move.destination.name, move.destination.uri) as dst:
        arrived = {p.mac for p in ports_from_domain(dst.domain_xml(move.vm))}
        for port in move.ports:
            view = _view(dst, port.segment.network)
            name = port.segment.bridge or (view.bridge if view else None)
            if not name:
                continue
            deadline = time.monotonic() + wait_s
            while True:
                verdict = fdb_verdict(
                    port.mac,
                    bridge.fdb(dst_exec, name),
                    bridge.uplinks(dst_exec, name),
                    bridge.fdb(src_exec, name),
                    bridge.uplinks(src_exec, name),
                )
                if verdict.ok or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            data = {
                "mac": port.mac,
                "mac_unchanged": port.mac in arrived,
                "fdb_ok": verdict.ok,
                "destination_port": verdict.destination_port,
                "source_claims": list(verdict.source_claims),
            }
            store.add_event(job_id, "network", verdict.message, data)
            note(verdict.message)
    return verdict
