"""vmferry's nftables rules for port profiles (pure: parse what is there, render the change).

One table, ``bridge vmferry``, per host::

    table bridge vmferry {
        map ports { type ether_addr : verdict; }       # VM MAC -> jump to its profile chain
        chain forward { type filter hook forward priority 0; policy accept;
                        ether daddr vmap @ports }
        chain vmf-<profile> { ... the profile's ACL for traffic to the VM ... }
    }

Rules match on the destination MAC, not on a tap name, so they can be put in place on a host
before the VM (and its tap) arrive. Every rule vmferry writes carries a ``vmf:`` comment; the
comments are how a profile is read back from a host. The bridge family has no connection
tracking here (no ``nf_conntrack_bridge``), so the ACL is stateless: TCP segments other than
a bare SYN pass (the replies of the VM's own connections), ARP passes, the allowed traffic
passes, and everything else to the VM is dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vmferry.errors import VmferryError
from vmferry.model.netprofile import AclProto, AclRule, Bandwidth, PortProfile
from vmferry.netprofile.spec import check_level, format_acl_rule, parse_acl_rule

FAMILY = "bridge"
TABLE = "vmferry"
PORTS_MAP = "ports"
FORWARD_CHAIN = "forward"
CHAIN_PREFIX = "vmf-"
_T = f"{FAMILY} {TABLE}"


def chain_name(profile: str) -> str:
    return f"{CHAIN_PREFIX}{profile}"


@dataclass(frozen=True)
class NftState:
    """vmferry's table on one host: chains with their ``vmf:`` rule comments, and the MAC map."""

    present: bool = False
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ports: dict[str, str] = field(default_factory=dict)  # mac -> chain

    def macs_of(self, chain: str) -> tuple[str, ...]:
        return tuple(sorted(m for m, c in self.ports.items() if c == chain))


def parse_state(nft_json: str) -> NftState:
    """Read ``nft -j list table bridge vmferry`` output (empty text: no table)."""
    if not nft_json.strip():
        return NftState()
    try:
        items = json.loads(nft_json)["nftables"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VmferryError(f"unreadable nft JSON: {exc}", cause=exc) from exc
    chains: dict[str, list[str]] = {}
    ports: dict[str, str] = {}
    present = False
    for item in items:
        if not isinstance(item, dict):
            continue
        if "table" in item:
            present = True
        elif "chain" in item:
            chains.setdefault(str(item["chain"]["name"]), [])
        elif "rule" in item:
            rule = item["rule"]
            comment = str(rule.get("comment", ""))
            if comment.startswith("vmf:"):
                chains.setdefault(str(rule["chain"]), []).append(comment)
        elif "map" in item and item["map"].get("name") == PORTS_MAP:
            for pair in item["map"].get("elem", []):
                mac, verdict = _map_pair(pair)
                if mac and verdict:
                    ports[mac] = verdict
    return NftState(present, {k: tuple(v) for k, v in chains.items()}, ports)


def _map_pair(pair: Any) -> tuple[str | None, str | None]:
    if not (isinstance(pair, list) and len(pair) == 2):
        return None, None
    key, verdict = pair
    if isinstance(key, dict) and "elem" in key:
        key = key["elem"].get("val")
    target = None
    if isinstance(verdict, dict):
        for kind in ("jump", "goto"):
            if kind in verdict:
                target = str(verdict[kind].get("target"))
    return (str(key).lower() if key else None), target


def _acl_match(rule: AclRule) -> str:
    parts = []
    if rule.proto in (AclProto.TCP, AclProto.UDP, AclProto.ICMP):
        parts.append(f"ip protocol {rule.proto.value}")
    else:
        parts.append("ether type ip")
    if rule.ports:
        ports = ", ".join(str(p) for p in rule.ports)
        parts.append(f"{rule.proto.value} dport {{ {ports} }}")
    if rule.peer:
        parts.append(f"ip saddr {rule.peer}")
    return " ".join(parts)


def profile_rules(profile: PortProfile) -> tuple[tuple[str, str], ...]:
    """The profile chain's rules as (statement, comment), in order."""
    acl_on = profile.acl is not None
    rules = [
        (
            "counter",
            f"vmf:profile {profile.name} level={profile.security_level} "
            f"acl={'on' if acl_on else 'off'}"
            + _rate_words("in", profile.inbound)
            + _rate_words("out", profile.outbound),
        )
    ]
    if profile.acl is not None:
        rules.append(("ether type arp accept", "vmf:arp"))
        rules.append(("ip protocol tcp tcp flags & (syn | ack) != syn accept", "vmf:tcp-replies"))
        for rule in profile.acl:
            rules.append((f"{_acl_match(rule)} accept", f"vmf:acl {format_acl_rule(rule)}"))
        rules.append(("drop", "vmf:drop"))
    return tuple(rules)


def _rate_words(direction: str, bw: Bandwidth | None) -> str:
    """`` in=2048`` or `` in=2048/64`` (KiB/s, burst KiB): the rate vmferry shapes with tc."""
    if bw is None:
        return ""
    return f" {direction}={bw.average_kib_s}" + (f"/{bw.burst_kib}" if bw.burst_kib else "")


def read_rates(comments: tuple[str, ...]) -> tuple[Bandwidth | None, Bandwidth | None]:
    """(inbound, outbound) recorded in a profile chain's first comment."""
    if not comments or not comments[0].startswith("vmf:profile "):
        return None, None
    words = dict(w.split("=", 1) for w in comments[0].split()[2:] if "=" in w)

    def bw(text: str | None) -> Bandwidth | None:
        if not text:
            return None
        avg, _, burst = text.partition("/")
        try:
            return Bandwidth(int(avg), None, int(burst) if burst else None)
        except ValueError:
            return None

    return bw(words.get("in")), bw(words.get("out"))


def profile_comments(profile: PortProfile) -> tuple[str, ...]:
    return tuple(c for _, c in profile_rules(profile))


def read_chain(comments: tuple[str, ...]) -> tuple[str, tuple[AclRule, ...] | None] | None:
    """(security level, ACL) from a profile chain's comments; None if it is not vmferry's."""
    if not comments or not comments[0].startswith("vmf:profile "):
        return None
    words = dict(w.split("=", 1) for w in comments[0].split()[2:] if "=" in w)
    level = check_level(words.get("level", "default"))
    if words.get("acl") != "on":
        return level, None
    acl = tuple(
        parse_acl_rule(c.removeprefix("vmf:acl ")) for c in comments if c.startswith("vmf:acl ")
    )
    return level, acl


def _base(state: NftState) -> list[str]:
    lines = [
        f"add table {_T}",
        f"add map {_T} {PORTS_MAP} {{ type ether_addr : verdict; }}",
        f"add chain {_T} {FORWARD_CHAIN} {{ type filter hook forward priority 0; policy accept; }}",
    ]
    if FORWARD_CHAIN not in state.chains or "vmf:ports" not in state.chains[FORWARD_CHAIN]:
        lines.append(
            f'add rule {_T} {FORWARD_CHAIN} ether daddr vmap @{PORTS_MAP} comment "vmf:ports"'
        )
    return lines


def apply_script(state: NftState, profile: PortProfile, macs: dict[str, str]) -> str:
    """An ``nft -f`` script that makes the profile's chain exactly ``profile`` and sends
    traffic to each MAC of ``macs`` (mac -> VM name, for the element's comment) through it.
    Applying it twice changes nothing more."""
    chain = chain_name(profile.name)
    lines = _base(state)
    if state.chains.get(chain) != profile_comments(profile):
        lines.append(f"add chain {_T} {chain}")
        lines.append(f"flush chain {_T} {chain}")
        for statement, comment in profile_rules(profile):
            lines.append(f'add rule {_T} {chain} {statement} comment "{comment}"')
    for mac, vm in sorted(macs.items()):
        mac = mac.lower()
        if state.ports.get(mac) == chain:
            continue
        if mac in state.ports:
            lines.append(f"delete element {_T} {PORTS_MAP} {{ {mac} }}")
        lines.append(
            f'add element {_T} {PORTS_MAP} {{ {mac} comment "{_safe(vm)}" : jump {chain} }}'
        )
    return "\n".join(lines) + "\n"


def remove_script(state: NftState, macs: tuple[str, ...], profiles: tuple[str, ...]) -> str:
    """Unbind ``macs`` and delete the chains of ``profiles`` that no other MAC still uses.
    Empty when there is nothing to remove."""
    if not state.present:
        return ""
    gone = {m.lower() for m in macs}
    lines = [
        f"delete element {_T} {PORTS_MAP} {{ {m} }}" for m in sorted(gone & state.ports.keys())
    ]
    remaining = {m: c for m, c in state.ports.items() if m not in gone}
    for profile in profiles:
        chain = chain_name(profile)
        if chain in state.chains and chain not in remaining.values():
            lines.append(f"delete chain {_T} {chain}")
    return "\n".join(lines) + "\n" if lines else ""


def _safe(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum() or ch in "-_.")[:64]
