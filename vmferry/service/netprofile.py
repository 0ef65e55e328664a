"""`vmferry netprofile ...` and the network half of `vmferry migrate`.

Named profiles are kept as JSON files, one per profile, in ``$VMFERRY_NETPROFILES`` (default
``<vmferry data dir>/netprofiles``). On a host, a profile is a portgroup of the same name in
its libvirt network plus a chain in vmferry's nftables table ``bridge vmferry`` (the ACL, and
the rates in its first rule's comment), with the VM's MAC bound to it, plus vmferry's own
``htb`` shaping (:mod:`vmferry.netprofile.shaping`): on the VM's tap (to the VM) and on the
bridge's uplink for the VM's MAC (from the VM). The portgroup then carries no
``<bandwidth>``: libvirt would shape with ``sfq``, which the lab's kernel lacks. vmferry runs
nft and tc only where it can run commands on the host (the host record's ``shell``, see
:mod:`vmferry.drivers.host_exec`); elsewhere the portgroup carries libvirt's ``<bandwidth>``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

from vmferry.assess.network import MoveNetworkFacts, PortMoveFacts
from vmferry.drivers import bridge, libvirt_network, nft, tc_shaping
from vmferry.drivers.host_exec import HostExec
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import InUseError, NotFoundError, VmferryError
from vmferry.model import Host
from vmferry.model.jsonable import to_jsonable
from vmferry.model.netprofile import AclRule, Bandwidth, L2Reach, PortProfile, VmPort
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
from vmferry.verify import sites

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


def host_exec(host: Host) -> HostExec | None:
    """How to run network commands on ``host``: its record's shell, or None (libvirt shapes,
    and what only a shell can read is reported as not checked)."""
    return HostExec.for_shell(host.name, host.shell)


def read_host_profile(
    conn: LibvirtHost, hexec: HostExec | None, network: str, name: str
) -> tuple[PortProfile | None, Rules | None]:
    """The profile ``name`` as ``conn``'s host has it: (its portgroup as a profile, or None;
    (level, ACL) of vmferry's rules for it, or None). The portgroup's rates are those of
    vmferry's chain (what vmferry shapes with tc) when the chain is there, else libvirt's
    ``<bandwidth>`` of the portgroup."""
    xml = libvirt_network.network_xml(conn, network)
    view = network_view(xml) if xml is not None else None
    pg = view.portgroups.get(name) if view is not None else None
    rules = None
    rates: tuple[Bandwidth | None, Bandwidth | None] | None = None
    if hexec is not None:
        comments = nft.read_state(hexec).chains.get(nft_rules.chain_name(name))
        rules = nft_rules.read_chain(comments) if comments else None
        rates = nft_rules.read_rates(comments) if rules is not None and comments else None
    if pg is None:
        return None, rules
    inbound, outbound = rates if rates is not None else (pg.inbound, pg.outbound)
    return PortProfile(name, network, inbound, outbound), rules


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


def capture_json(report: CaptureReport) -> dict[str, Any]:
    """`vmferry netprofile capture --json`'s document (and the API's answer to it)."""
    return {"vm": report.vm, "host": report.host, "ports": to_jsonable(report.ports),
            "profiles": [profile_to_json(p) for p in report.profiles]}  # fmt: skip


def capture(vm: str, *, save: bool = True) -> CaptureReport:
    """Read the profiles of ``vm``'s NICs from the host it runs on and keep them by name."""
    store = open_store()
    location = locate(vm, store.list_hosts())
    host = location.host
    hexec = host_exec(host)
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
    """The domain's ports with the addresses the sites have seen for their MACs
    (:func:`vmferry.verify.sites.known_addresses`)."""
    ports = ports_from_domain(domain_xml)
    seen = sites.known_addresses()
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
    shaped: list[str] = field(default_factory=list)  # "vmup0 from 52:54:..", "vnet0 to .."
    shaped_uplinks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # mac -> uplinks


def apply_on(
    conn: LibvirtHost,
    hexec: HostExec | None,
    profile: PortProfile,
    macs: dict[str, str],
    taps: dict[str, str] | None = None,
) -> ApplyReport:
    """Make ``conn``'s host have ``profile``: the portgroup and, where vmferry can run
    commands there, its rules with ``macs`` (mac -> VM) bound and its rates shaped with tc
    (from each MAC on the bridge's uplinks; to it on its tap, for ``taps``: mac -> tap of a
    running VM). Where vmferry cannot, the portgroup carries libvirt's ``<bandwidth>``.
    Idempotent."""
    xml = libvirt_network.network_xml(conn, profile.network)
    if xml is None:
        raise NotFoundError(f"host {conn.name!r} has no network {profile.network!r}")
    view = network_view(xml)
    pg = view.portgroups.get(profile.name)
    if hexec is None:  # libvirt shapes
        want: tuple[Bandwidth | None, Bandwidth | None] = (profile.inbound, profile.outbound)
    else:  # vmferry shapes; a portgroup <bandwidth> would make libvirt use sfq
        want = (None, None)
    new_pg = portgroup_xml(profile.name, *want)
    if pg is None:
        libvirt_network.add_portgroup(conn, profile.network, new_pg)
        pg_done = "added"
    elif (pg.inbound, pg.outbound) != want:
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
    uplinks = tuple(sorted(bridge.uplinks(hexec, view.bridge))) if view.bridge else ()
    if profile.outbound is not None:
        for mac in macs:
            for uplink in uplinks:
                tc_shaping.shape_uplink(hexec, uplink, mac, profile.outbound)
                report.shaped.append(f"{uplink} from {mac}")
            report.shaped_uplinks[mac] = uplinks
    for mac, tap in (taps or {}).items():
        if profile.inbound is not None and mac in macs:
            tc_shaping.shape_tap(hexec, tap, profile.inbound)
            report.shaped.append(f"{tap} to {mac}")
    return report


def unshape(
    conn: LibvirtHost, hexec: HostExec, profile: PortProfile, macs: tuple[str, ...]
) -> list[str]:
    """Remove vmferry's tc state for ``macs`` from the host (uplink classes; the tap of a VM
    still running there). Returns what was removed."""
    view = _view(conn, profile.network)
    uplinks = sorted(bridge.uplinks(hexec, view.bridge)) if view and view.bridge else []
    done = [
        f"{uplink} class of {mac}"
        for mac in macs
        for uplink in uplinks
        if tc_shaping.unshape_uplink(hexec, uplink, mac)
    ]
    return done


def running_taps(conn: LibvirtHost) -> dict[str, str]:
    """MAC -> tap of every NIC of the host's running domains (live XML)."""
    running = set(conn.running_vm_names())
    return {
        p.mac: p.target_dev
        for name, xml in libvirt_network.domain_xmls(conn).items()
        if name in running
        for p in ports_from_domain(xml)
        if p.target_dev
    }


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
        taps = {m: t for m, t in running_taps(conn).items() if m in macs}
        return apply_on(conn, host_exec(host), profile, macs, taps)


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
    if hexec is not None and macs:
        done += unshape(conn, hexec, profile, macs)
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
            raise InUseError(f"profile {name!r} is in use on {host_name} by {', '.join(users)}")
        return remove_from(conn, host_exec(host), profile, (), portgroup=True)


# -- pre-flight -------------------------------------------------------------------------


def gather_move_facts(
    src: LibvirtHost, dst: LibvirtHost, vm: str, source: Host, destination: Host
) -> MoveNetworkFacts:
    """What the network rules (:mod:`vmferry.assess.network`) need. Changes nothing (the
    ARP probe changes no neighbour cache)."""
    src_exec, dst_exec = host_exec(source), host_exec(destination)
    ports = _ports_with_addresses(src.domain_xml(vm))
    facts = []
    for port in ports:
        dst_view = _view(dst, port.segment.network)
        bridge_name = port.segment.bridge or (dst_view.bridge if dst_view else None)
        src_view = _view(src, port.segment.network)
        src_bridge = src_view.bridge if src_view else port.segment.bridge
        reach, detail = _reach(dst_exec, bridge_name, port, src_exec, src_bridge)
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
    return MoveNetworkFacts(vm, source.name, destination.name, tuple(facts), dst_exec is not None)


def _vni(hexec: HostExec | None, bridge_name: str | None) -> int | None:
    if hexec is None or not bridge_name:
        return None
    try:
        return bridge.vni(hexec, bridge_name)
    except VmferryError:
        return None


def _reach(
    hexec: HostExec | None,
    bridge_name: str | None,
    port: VmPort,
    src_exec: HostExec | None = None,
    src_bridge: str | None = None,
) -> tuple[L2Reach, str]:
    """Probe the VM's address from the destination's bridge. Without an answer, probe from
    the source's own bridge: only when the VM answers there is the destination on another
    segment (a VM that is still booting, or has no IPv4 there, answers neither: unverified);
    then the destination is probed once more, in case the VM only just came up."""
    if hexec is None:
        return L2Reach.UNVERIFIED, "vmferry can probe the segment only from lab hosts"
    if not bridge_name:
        return L2Reach.UNVERIFIED, "the destination's network names no bridge"
    v4 = [a for a in port.addresses if ":" not in a]
    if not v4:
        return L2Reach.UNVERIFIED, f"no IPv4 address seen for {port.mac}"
    reached, detail = bridge.arp_probe(hexec, bridge_name, v4[0])
    if reached or src_exec is None or not src_bridge:
        return (L2Reach.REACHED if reached else L2Reach.UNREACHED), detail
    # a VM that is still booting may take a few seconds to answer on its own host
    at_home, home_detail = bridge.arp_probe(src_exec, src_bridge, v4[0], timeout_s=5.0)
    if not at_home:
        return L2Reach.UNVERIFIED, (
            f"{detail}; the VM did not answer on its own host's bridge either ({home_detail})"
        )
    reached, detail = bridge.arp_probe(hexec, bridge_name, v4[0])
    if reached:
        return L2Reach.REACHED, detail
    return L2Reach.UNREACHED, f"{detail}, while it answers on its own host ({home_detail})"


# -- during a migration -----------------------------------------------------------------


@dataclass
class TapShaping:
    """One NIC whose rate to the VM must be shaped on the destination's tap, once the
    incoming QEMU has created it (before the switchover)."""

    mac: str
    inbound: Bandwidth
    tap: str | None = None
    at_s: float | None = None  # seconds after the watcher started
    error: str | None = None


class TapWatcher:
    """Polls the destination (its own libvirt connection, in a thread) for the incoming
    domain's taps and shapes each as soon as it appears. The store is not touched from the
    thread: :func:`finish_move` records what it did."""

    def __init__(self, vm: str, destination: Host, hexec: HostExec, todo: list[TapShaping]):
        self.vm, self.destination, self.hexec, self.todo = vm, destination, hexec, todo
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tap-watch-{vm}", daemon=True)
        self.started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            with LibvirtHost.connect(self.destination.name, self.destination.uri) as dst:
                while not self._stop.is_set() and any(t.tap is None for t in self.todo):
                    self._poll(dst)
                    self._stop.wait(0.05)
        except VmferryError as exc:
            for t in self.todo:
                if t.tap is None:
                    t.error = exc.message

    def _poll(self, dst: LibvirtHost) -> None:
        try:
            xml = dst.domain_xml(self.vm)
        except VmferryError:
            return  # not there yet
        taps = {p.mac: p.target_dev for p in ports_from_domain(xml) if p.target_dev}
        for t in self.todo:
            tap = taps.get(t.mac)
            if t.tap is None and tap:
                try:
                    tc_shaping.shape_tap(self.hexec, tap, t.inbound)
                except VmferryError as exc:
                    t.error = exc.message
                    continue
                t.tap, t.at_s = tap, round(time.monotonic() - self.started, 3)


@dataclass
class NetworkMove:
    """What :func:`prepare_destination` did, so that :func:`finish_move` can undo or clean."""

    vm: str
    source: Host
    destination: Host
    ports: tuple[VmPort, ...] = ()
    profiles: dict[str, PortProfile] = field(default_factory=dict)
    applied: list[ApplyReport] = field(default_factory=list)
    watcher: TapWatcher | None = None


def prepare_destination(
    vm: str, source: Host, destination: Host, store: Store, job_id: str, note: NoteFn = _quiet
) -> NetworkMove:
    """Before the migration starts: put every profile of ``vm``'s NICs on the destination
    (portgroup, ACL rules keyed on the VM's MAC, the rate from the VM on the uplink), and
    start watching for the incoming tap to shape the rate to the VM on it."""
    move = NetworkMove(vm, source, destination)
    src_exec, dst_exec = host_exec(source), host_exec(destination)
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
                    + (f", shaped {'; '.join(report.shaped)}" if report.shaped else "")
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
                        "shaped": list(report.shaped),
                    },
                )
                note(message)
            todo = [TapShaping(mac, p.inbound) for mac, p in move.profiles.items() if p.inbound]
            if todo and dst_exec is not None:
                move.watcher = TapWatcher(vm, destination, dst_exec, todo)
                move.watcher.start()
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
    if move.watcher is not None:
        move.watcher.stop()
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
            if dst_exec is not None:
                for mac, uplinks in report.shaped_uplinks.items():
                    for uplink in uplinks:
                        if tc_shaping.unshape_uplink(dst_exec, uplink, mac):
                            removed.append(f"{uplink} class of {mac}")
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


def _record_taps(move: NetworkMove, moved: bool, store: Store, job_id: str, note: NoteFn) -> None:
    """Stop the tap watcher and record what it did; after a move, shape any tap it missed."""
    watcher = move.watcher
    if watcher is None:
        return
    watcher.stop()
    for t in watcher.todo:
        late = False
        if t.tap is None and moved and t.error is None:  # the switchover beat the watcher
            with LibvirtHost.connect(move.destination.name, move.destination.uri) as dst:
                taps = {p.mac: p.target_dev for p in ports_from_domain(dst.domain_xml(move.vm))}
            tap = taps.get(t.mac)
            if tap:
                tc_shaping.shape_tap(watcher.hexec, tap, t.inbound)
                t.tap, t.at_s, late = tap, round(time.monotonic() - watcher.started, 3), True
        if t.tap is not None:
            message = (
                f"rate to {t.mac} shaped on {move.destination.name}'s {t.tap} "
                f"({t.inbound.average_kib_s} KiB/s) {t.at_s} s after the migration started"
                + (", after the switchover" if late else ", before the switchover")
            )
        else:
            message = f"rate to {t.mac} not shaped on {move.destination.name}: " + (
                t.error or "its tap never appeared"
            )
        data = {"mac": t.mac, "tap": t.tap, "at_s": t.at_s, "after_switchover": late}
        store.add_event(job_id, "network", message, data)
        note(message)


def finish_move(
    move: NetworkMove, moved: bool, store: Store, job_id: str, note: NoteFn = _quiet
) -> FdbVerdict | None:
    """After the migration: if it moved, check that the network learned the new location and
    remove the profiles from the source; if not, remove what was added on the destination."""
    src_exec, dst_exec = host_exec(move.source), host_exec(move.destination)
    try:
        _record_taps(move, moved, store, job_id, note)
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
