"""Did the network learn the VM's new location? Verdicts over bridge FDB entries (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from vmferry.errors import VmferryError
from vmferry.model.netprofile import FdbEntry


def parse_fdb(bridge_json: str, bridge: str) -> tuple[FdbEntry, ...]:
    """Entries of ``bridge -j fdb show br BRIDGE`` that belong to the bridge's forwarding
    table (those with ``master`` = the bridge), MACs in lowercase."""
    if not bridge_json.strip():
        return ()
    try:
        rows = json.loads(bridge_json)
    except json.JSONDecodeError as exc:
        raise VmferryError(f"unreadable bridge fdb JSON: {exc}", cause=exc) from exc
    entries = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict) or row.get("master") != bridge or "mac" not in row:
            continue
        state = str(row.get("state", ""))
        entries.append(
            FdbEntry(
                str(row["mac"]).lower(), str(row.get("ifname", "")), local=state == "permanent"
            )
        )
    return tuple(entries)


@dataclass(frozen=True)
class FdbVerdict:
    ok: bool
    destination_port: str | None  # where the destination's bridge forwards the MAC now
    source_claims: tuple[str, ...]  # the source's local (non-uplink) ports that still have it
    message: str


def fdb_verdict(
    mac: str,
    destination: tuple[FdbEntry, ...],
    destination_uplinks: frozenset[str],
    source: tuple[FdbEntry, ...],
    source_uplinks: frozenset[str],
) -> FdbVerdict:
    """The move is learned when the destination's bridge has the MAC on a local (VM) port and
    the source's bridge has it, if at all, only behind its uplink."""
    mac = mac.lower()
    dest_ports = [e.port for e in destination if e.mac == mac and not e.local]
    local_dest = [p for p in dest_ports if p not in destination_uplinks]
    claims = tuple(
        sorted(
            {
                e.port
                for e in source
                if e.mac == mac and not e.local and e.port not in source_uplinks
            }
        )
    )
    where = local_dest[0] if local_dest else (dest_ports[0] if dest_ports else None)
    if not local_dest:
        seen = f"only behind uplink {where}" if where else "nowhere"
        return FdbVerdict(
            False, where, claims, f"the destination's bridge has {mac} {seen}, not on the VM's port"
        )
    if claims:
        return FdbVerdict(
            False, where, claims, f"the source's bridge still has {mac} on {', '.join(claims)}"
        )
    return FdbVerdict(
        True, where, (), f"{mac} is on {where} at the destination; the source no longer claims it"
    )
