"""Pure: did the source's static addresses come back on KVM? The addresses VMware Tools
reported per NIC (MAC) against what the guest agent reports after the first boot."""

from __future__ import annotations

from dataclasses import dataclass

from vmferry.model.agent import AgentView
from vmferry.model.source_vm import GuestNetwork

__all__ = ["AddressCheck", "addresses_kept", "all_back", "v2v_static_ips"]


@dataclass(frozen=True)
class AddressCheck:
    """One NIC: the addresses the source reported, those the agent reports (None: the
    agent did not answer) and whether every one came back (None: not known)."""

    mac: str
    expected: tuple[str, ...]
    found: tuple[str, ...] | None
    kept: bool | None


def addresses_kept(source: GuestNetwork, seen: AgentView | None) -> tuple[AddressCheck, ...]:
    """Each NIC the source reported addresses for, judged against ``seen``."""
    checks = []
    for mac, expected in source.addresses:
        if seen is None:
            checks.append(AddressCheck(mac, expected, None, None))
            continue
        found = tuple(sorted(seen.addresses.get(mac.lower(), frozenset())))
        checks.append(AddressCheck(mac, expected, found, set(expected) <= set(found)))
    return tuple(checks)


def all_back(checks: tuple[AddressCheck, ...]) -> bool:
    """Whether the agent answered and every NIC has all its addresses again."""
    return all(check.kept is True for check in checks)


def v2v_static_ips(network: GuestNetwork) -> list[str]:
    """virt-v2v's options that give a Windows guest's new NICs the source's addresses:
    ``--mac MAC:ip:ADDRESS,GATEWAY,PREFIX,DNS...`` per IPv4 address (virt-v2v sets them in
    the guest at its first boot, per MAC). IPv6 addresses are left out (virt-v2v takes
    IPv4 there). Its fields are positional and it refuses an empty gateway, so without a
    gateway only the address is given (virt-v2v's default prefix, no DNS)."""
    args: list[str] = []
    for mac, addresses in network.addresses:
        for address in addresses:
            ip, _, prefix = address.partition("/")
            if ":" in ip:
                continue
            fields = [ip]
            if network.gateway is not None:
                fields += [network.gateway, *([prefix, *network.dns] if prefix else [])]
            args += ["--mac", f"{mac.lower()}:ip:{','.join(fields)}"]
    return args
