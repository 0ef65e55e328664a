"""A host's Linux bridges: forwarding table, uplinks, VXLAN VNI, neighbours, an ARP probe."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from vmferry.drivers.host_exec import HostExec
from vmferry.model.netprofile import FdbEntry
from vmferry.netprofile.fdb import parse_fdb


def fdb(host: HostExec, bridge: str) -> tuple[FdbEntry, ...]:
    done = host.run(["bridge", "-j", "fdb", "show", "br", bridge])
    return parse_fdb(done.stdout, bridge)


def _links(host: HostExec, bridge: str) -> list[dict[str, Any]]:
    done = host.run(["ip", "-j", "-d", "link", "show", "master", bridge], check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return []
    rows = json.loads(done.stdout)
    return [r for r in rows if isinstance(r, dict)]


def uplinks(host: HostExec, bridge: str) -> frozenset[str]:
    """The bridge's ports that are not VM taps (libvirt names taps ``vnetN``)."""
    return frozenset(
        str(r["ifname"])
        for r in _links(host, bridge)
        if not str(r.get("ifname", "")).startswith("vnet")
    )


def vni(host: HostExec, bridge: str) -> int | None:
    """The VXLAN VNI of a vxlan port of the bridge, if it has one."""
    for row in _links(host, bridge):
        info = row.get("linkinfo", {})
        if info.get("info_kind") == "vxlan":
            got = info.get("info_data", {}).get("id")
            return int(got) if got is not None else None
    return None


def neighbours(host: HostExec) -> dict[str, tuple[str, ...]]:
    """MAC -> IPv4/IPv6 addresses in the namespace's neighbour table."""
    done = host.run(["ip", "-j", "neigh", "show"], check=False)
    found: dict[str, set[str]] = {}
    if done.returncode == 0 and done.stdout.strip():
        for row in json.loads(done.stdout):
            mac = str(row.get("lladdr", "")).lower()
            if mac and row.get("dst"):
                found.setdefault(mac, set()).add(str(row["dst"]))
    return {m: tuple(sorted(a)) for m, a in found.items()}


def arp_probe(host: HostExec, iface: str, addr: str, timeout_s: float = 1.5) -> tuple[bool, str]:
    """(reached, detail) for an ARP probe for ``addr`` sent from ``iface`` on ``host``
    (3 requests over ``timeout_s``)."""
    started = time.monotonic()
    argv = [sys.executable, "-m", "vmferry.drivers.l2probe", iface, addr, str(timeout_s)]
    done = host.run(argv, timeout_s=timeout_s + 15, check=False)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return False, f"the ARP probe on {host.host} failed: {done.stderr.strip()[-200:]}"
    if result.get("error"):
        return False, f"the ARP probe on {host.host}'s {iface} failed: {result['error']}"
    took = round((time.monotonic() - started) * 1000)
    if result.get("reached"):
        return True, f"ARP probe from {host.host}'s {iface}: {addr} is at {result['mac']}"
    return False, f"no answer for {addr} to an ARP probe from {host.host}'s {iface} ({took} ms)"
