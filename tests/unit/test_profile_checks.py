"""Which ports a profile must leave open or closed, and the rate verdict."""

from __future__ import annotations

from vmferry.model.netprofile import AclProto, AclRule, Bandwidth, PortProfile
from vmferry.verify import profile_checks
from vmferry.verify.profile_checks import judge_rate, plan_checks, transfer_bytes

PORTS = (7, 9, 19, 7001)  # the ports a VM listens on (the lab guest's)


def test_acl_decides_open_and_blocked_guest_ports() -> None:
    profile = PortProfile("web", "vmnet", Bandwidth(2048), Bandwidth(1024),
                          acl=(AclRule(AclProto.TCP, (7, 9, 19), "198.18.2.0/24"),
                               AclRule(AclProto.ICMP)))  # fmt: skip
    plan = plan_checks(profile, PORTS)
    assert plan.open_ports == (7, 9, 19)
    assert plan.closed_ports == (7001,)
    assert plan.rate_to_vm_bytes_s == 2048 * 1024
    assert plan.rate_from_vm_bytes_s == 1024 * 1024


def test_no_acl_leaves_everything_open_and_any_rule_opens_all() -> None:
    assert plan_checks(PortProfile("p", "n"), PORTS).closed_ports == ()
    anyrule = PortProfile("p", "n", acl=(AclRule(AclProto.ANY),))
    assert plan_checks(anyrule, PORTS).closed_ports == ()
    nothing = PortProfile("p", "n", acl=())
    assert plan_checks(nothing, PORTS).open_ports == ()


def test_rate_within_ten_percent_either_side() -> None:
    assert judge_rate("r", 2_000_000, 1_850_000).ok
    assert judge_rate("r", 2_000_000, 2_150_000).ok
    assert not judge_rate("r", 2_000_000, 1_700_000).ok
    assert not judge_rate("r", 2_000_000, 2_300_000).ok
    assert "-7.5%" in judge_rate("r", 2_000_000, 1_850_000).detail


def test_transfers_are_bounded() -> None:
    assert transfer_bytes(2_000_000) == 6_000_000
    assert transfer_bytes(10**9) == 32 * 2**20


class ScriptedProber:
    """Answers transfers with the rates it was given, in order; every port is open."""

    def __init__(self, *rates: float) -> None:
        self.queue = list(rates)
        self.runs: list[float] = []

    def port_open(self, addr: str, port: int) -> bool:
        return True

    def transfer_rate(self, addr: str, nbytes: int, *, to_vm: bool) -> float:
        self.runs.append(self.queue[0])
        return self.queue.pop(0)


def test_a_short_rate_is_measured_once_more_and_an_excess_is_not() -> None:
    limit = 2_000_000.0
    p = ScriptedProber(1_700_000, 1_950_000)  # short, then within the band
    result = profile_checks.measure_rate("rate to the VM", "198.18.2.100", limit, p, to_vm=True)
    assert result.ok and len(p.runs) == 2 and "the first run gave 1.700 MB/s" in result.detail
    p = ScriptedProber(1_700_000, 1_600_000)  # short twice: a failure
    assert not profile_checks.measure_rate("r", "a", limit, p, to_vm=False).ok and len(p.runs) == 2
    p = ScriptedProber(2_500_000, 2_000_000)  # over the limit: the shaper does not hold
    assert not profile_checks.measure_rate("r", "a", limit, p, to_vm=True).ok
    assert p.runs == [2_500_000]
    p = ScriptedProber(1_990_000)
    assert profile_checks.measure_rate("r", "a", limit, p, to_vm=True).ok and len(p.runs) == 1
