"""Profile names, ACL rule strings and the JSON form of a profile (pure, validating)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from vmferry.errors import BadInputError
from vmferry.model.netprofile import AclProto, AclRule, Bandwidth, PortProfile

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
_LEVEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
MAX_ACL_RULES = 32


def check_name(name: str) -> str:
    """A profile name: 1-24 lowercase letters, digits or '-' (it names a chain and a portgroup)."""
    if not _NAME.match(name):
        raise BadInputError(f"profile name {name!r}: use 1-24 lowercase letters, digits or '-'")
    return name


def check_level(level: str) -> str:
    if not _LEVEL.match(level):
        raise BadInputError(f"security level {level!r}: use 1-24 lowercase letters, digits or '-'")
    return level


def parse_acl_rule(text: str) -> AclRule:
    """``PROTO[:PORT[,PORT...]][@PEER]``: ``tcp:7,9@198.18.2.0/24``, ``icmp``, ``any@10.0.0.1``."""
    spec, _, peer_text = text.strip().partition("@")
    proto_text, _, ports_text = spec.partition(":")
    try:
        proto = AclProto(proto_text.lower())
    except ValueError:
        raise BadInputError(f"ACL rule {text!r}: protocol must be tcp, udp, icmp or any") from None
    ports: tuple[int, ...] = ()
    if ports_text:
        if proto not in (AclProto.TCP, AclProto.UDP):
            raise BadInputError(f"ACL rule {text!r}: only tcp and udp rules take ports")
        try:
            ports = tuple(sorted({int(p) for p in ports_text.split(",")}))
        except ValueError:
            raise BadInputError(f"ACL rule {text!r}: ports are numbers 1-65535") from None
        if not all(1 <= p <= 65535 for p in ports):
            raise BadInputError(f"ACL rule {text!r}: ports are numbers 1-65535")
    peer = None
    if peer_text:
        try:
            peer = str(ipaddress.IPv4Network(peer_text, strict=False))
        except ValueError:
            raise BadInputError(f"ACL rule {text!r}: the peer must be an IPv4 network") from None
    return AclRule(proto, ports, peer)


def format_acl_rule(rule: AclRule) -> str:
    text = rule.proto.value
    if rule.ports:
        text += ":" + ",".join(str(p) for p in rule.ports)
    if rule.peer:
        text += "@" + rule.peer
    return text


def make_profile(
    name: str,
    network: str,
    *,
    inbound_kib_s: int | None = None,
    outbound_kib_s: int | None = None,
    burst_kib: int | None = None,
    acl: list[str] | None = None,
    security_level: str = "default",
    vni: int | None = None,
) -> PortProfile:
    """A validated profile from command-line values (BadInputError, exit 2, otherwise)."""
    check_name(name)
    check_level(security_level)
    if not network or len(network) > 64:
        raise BadInputError("--network: the libvirt network the profile lives in")
    for what, value in (("--in-kib-s", inbound_kib_s), ("--out-kib-s", outbound_kib_s)):
        if value is not None and not 1 <= value <= 4_000_000:
            raise BadInputError(f"{what} must be between 1 and 4000000 (KiB/s)")
    if burst_kib is not None and not 1 <= burst_kib <= 1_000_000:
        raise BadInputError("--burst-kib must be between 1 and 1000000")
    if vni is not None and not 1 <= vni <= 16_777_215:
        raise BadInputError("--vni must be between 1 and 16777215")
    rules = tuple(parse_acl_rule(r) for r in acl) if acl is not None else None
    if rules is not None and len(rules) > MAX_ACL_RULES:
        raise BadInputError(f"at most {MAX_ACL_RULES} ACL rules")

    def bw(avg: int | None) -> Bandwidth | None:
        return Bandwidth(avg, None, burst_kib) if avg is not None else None

    return PortProfile(
        name, network, bw(inbound_kib_s), bw(outbound_kib_s), rules, security_level, vni
    )


def profile_to_json(profile: PortProfile) -> dict[str, Any]:
    def bw(b: Bandwidth | None) -> dict[str, Any] | None:
        if b is None:
            return None
        return {
            "average_kib_s": b.average_kib_s,
            "peak_kib_s": b.peak_kib_s,
            "burst_kib": b.burst_kib,
        }

    return {
        "name": profile.name,
        "network": profile.network,
        "inbound": bw(profile.inbound),
        "outbound": bw(profile.outbound),
        "acl": [format_acl_rule(r) for r in profile.acl] if profile.acl is not None else None,
        "security_level": profile.security_level,
        "vni": profile.vni,
    }


def profile_from_json(data: dict[str, Any]) -> PortProfile:
    """Rebuild (and validate) a profile from :func:`profile_to_json`'s form."""
    try:

        def bw(raw: Any) -> Bandwidth | None:
            if raw is None:
                return None
            peak, burst = raw.get("peak_kib_s"), raw.get("burst_kib")
            return Bandwidth(
                int(raw["average_kib_s"]),
                int(peak) if peak is not None else None,
                int(burst) if burst is not None else None,
            )

        acl = data.get("acl")
        vni = data.get("vni")
        profile = PortProfile(
            name=check_name(str(data["name"])),
            network=str(data["network"]),
            inbound=bw(data.get("inbound")),
            outbound=bw(data.get("outbound")),
            acl=tuple(parse_acl_rule(str(r)) for r in acl) if acl is not None else None,
            security_level=check_level(str(data.get("security_level", "default"))),
            vni=int(vni) if vni is not None else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInputError(f"unreadable port profile: {exc}") from exc
    return profile


def describe(profile: PortProfile) -> str:
    """One line: ``web (vmnet): in 1000 KiB/s, out 1000 KiB/s, ACL tcp:7, level restricted``."""
    parts = []
    if profile.inbound:
        parts.append(f"in {profile.inbound.average_kib_s} KiB/s")
    if profile.outbound:
        parts.append(f"out {profile.outbound.average_kib_s} KiB/s")
    if profile.acl is not None:
        parts.append("ACL " + (" ".join(format_acl_rule(r) for r in profile.acl) or "(none)"))
    parts.append(f"level {profile.security_level}")
    return f"{profile.name} ({profile.network}): " + ", ".join(parts)
