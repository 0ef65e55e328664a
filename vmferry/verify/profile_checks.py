"""After a move: prove from the client's side that a VM's port profiles are in force.

Given the TCP ports the VM listens on (a site's vantage says which; the lab guest's guestd
listens on 7 echo, 9 discard, 19 chargen and 7001 control), the checks are: every listening
port the ACL allows still opens, every one it blocks still does not, and a bounded transfer
each way runs within 10 % of the profile's rate (htb counts whole frames while the client
times payload, so a few percent under the limit is expected;
a run that falls short is measured once more, since a busy guest or host slows the receiver).

``plan_checks`` and ``judge`` are pure; ``check_in_force`` runs them through a
:class:`Prober` placed where the VM's users are (a site offers one, see
:mod:`vmferry.verify.sites`; the lab's runs in its client namespace).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from vmferry.model.netprofile import AclProto, PortProfile

SINK_PORT, SOURCE_PORT = 9, 19  # discard and chargen: the bounded transfers' ends
RATE_TOLERANCE = 0.10
TRANSFER_SECONDS = 3.0  # a bounded transfer lasts about this long at the limit
MAX_TRANSFER_BYTES = 32 * 2**20


class Prober(Protocol):
    """Reaches a VM's services from somewhere its users are."""

    def port_open(self, addr: str, port: int) -> bool:
        """Whether a TCP connection to ``addr:port`` opens within a couple of seconds."""
        ...

    def transfer_rate(self, addr: str, nbytes: int, *, to_vm: bool) -> float:
        """Bytes/s of a bounded transfer of ``nbytes`` to the VM's discard service (TCP 9) or
        from its chargen service (TCP 19)."""
        ...


@dataclass(frozen=True)
class CheckPlan:
    open_ports: tuple[int, ...]
    closed_ports: tuple[int, ...]
    rate_to_vm_bytes_s: float | None  # the profile's inbound limit
    rate_from_vm_bytes_s: float | None  # its outbound limit


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def _allowed(profile: PortProfile, port: int) -> bool:
    if profile.acl is None:
        return True
    return any(
        rule.proto in (AclProto.TCP, AclProto.ANY) and (not rule.ports or port in rule.ports)
        for rule in profile.acl
    )


def plan_checks(profile: PortProfile, ports: tuple[int, ...]) -> CheckPlan:
    """Which of the VM's listening ``ports`` must open and which must stay closed, and the
    rates to hold."""
    return CheckPlan(
        open_ports=tuple(p for p in ports if _allowed(profile, p)),
        closed_ports=tuple(p for p in ports if not _allowed(profile, p)),
        rate_to_vm_bytes_s=profile.inbound.average_kib_s * 1024 if profile.inbound else None,
        rate_from_vm_bytes_s=profile.outbound.average_kib_s * 1024 if profile.outbound else None,
    )


def judge_rate(name: str, limit_bytes_s: float, measured_bytes_s: float) -> CheckResult:
    """Within ``RATE_TOLERANCE`` of the limit, either side."""
    error = measured_bytes_s / limit_bytes_s - 1
    return CheckResult(
        name,
        abs(error) <= RATE_TOLERANCE,
        f"{measured_bytes_s / 1e6:.3f} MB/s against a limit of {limit_bytes_s / 1e6:.3f} MB/s "
        f"({error:+.1%})",
    )


def transfer_bytes(limit_bytes_s: float) -> int:
    return int(min(MAX_TRANSFER_BYTES, limit_bytes_s * TRANSFER_SECONDS))


def check_in_force(
    addr: str, ports: tuple[int, ...], profile: PortProfile, prober: Prober
) -> list[CheckResult]:
    """Run the plan through ``prober`` against the VM at ``addr`` listening on ``ports``."""
    plan = plan_checks(profile, ports)
    results = [
        CheckResult(f"port {p} open", prober.port_open(addr, p), "allowed by the ACL")
        for p in plan.open_ports
    ]
    results += [
        CheckResult(f"port {p} blocked", not prober.port_open(addr, p), "not allowed by the ACL")
        for p in plan.closed_ports
    ]
    for name, limit, to_vm in (
        ("rate to the VM", plan.rate_to_vm_bytes_s, True),
        ("rate from the VM", plan.rate_from_vm_bytes_s, False),
    ):
        if limit is not None and (SINK_PORT if to_vm else SOURCE_PORT) in plan.open_ports:
            results.append(measure_rate(name, addr, limit, prober, to_vm=to_vm))
    return results


def measure_rate(name: str, addr: str, limit: float, prober: Prober, *, to_vm: bool) -> CheckResult:
    """One bounded transfer judged against ``limit``; measured once more when it fell
    short (a busy guest or host slows the receiver, which says nothing about the shaper).
    Above the limit is a failure at once: the shaper does not hold."""
    measured = prober.transfer_rate(addr, transfer_bytes(limit), to_vm=to_vm)
    first = judge_rate(name, limit, measured)
    if first.ok or measured > limit:
        return first
    second = judge_rate(name, limit, prober.transfer_rate(addr, transfer_bytes(limit), to_vm=to_vm))
    return CheckResult(name, second.ok, f"{second.detail}; the first run gave {first.detail}")
