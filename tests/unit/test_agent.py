"""The guest agent's verdict: NICs and addresses kept, the clock's drift (pure)."""

from __future__ import annotations

from vmferry.model.agent import AgentCheck, AgentView, compare, health_verdict, view_from

LO = {
    "name": "lo",
    "hardware-address": "00:00:00:00:00:00",
    "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}],
}


def eth(mac: str, *addrs: str) -> dict[str, object]:
    return {"name": "eth0", "hardware-address": mac,
            "ip-addresses": [{"ip-address": a, "prefix": 24} for a in addrs]}  # fmt: skip


def test_a_view_keeps_each_nics_addresses_and_the_clock_offset_at_the_midpoint() -> None:
    view = view_from([LO, eth("52:54:00:AA:00:01", "198.18.2.100")], 1_000_000_500_000_000,
                     999_999.0, 1_000_001.0)  # fmt: skip
    assert view.addresses == {"52:54:00:aa:00:01": frozenset({"198.18.2.100/24"})}
    assert view.clock_offset_ms == 500.0


def test_kept_nics_pass_and_the_drift_is_the_change_of_the_offset() -> None:
    before = AgentView({"m1": frozenset({"10.0.0.5/24"})}, 40.0)
    after = AgentView({"m1": frozenset({"10.0.0.5/24", "fe80::1/64"})}, 290.0)
    check = compare(before, after)
    assert check.passed and check.clock_drift_ms == 250 and check.notes == ()


def test_what_was_lost_is_named_and_a_silent_agent_says_what_could_not_run() -> None:
    before = AgentView({"m1": frozenset({"10.0.0.5/24"}), "m2": frozenset()}, None)
    lost = compare(before, AgentView({"m1": frozenset({"10.0.0.9/24"})}, 0.0))
    assert (lost.ping, lost.mac_ok, lost.addresses_ok) == (True, False, False)
    assert lost.notes == (
        "the guest lost its NIC m2",
        "NIC m1 lost its address 10.0.0.5/24",
        "the guest agent did not give its clock: the drift is not measured",
    )
    silent = compare(before, None)
    assert not silent.passed and silent.clock_drift_ms is None
    assert "could not run" in silent.notes[0]


def test_the_health_command_must_pass_after_the_move_when_it_passed_before() -> None:
    cmd = "/bin/sh -c 'pidof nginx'"
    assert health_verdict(cmd, 0, 0, True) == (True, None)
    assert health_verdict(cmd, 0, 3, True) == (
        False, f"health command {cmd} exited 3 after the move")  # fmt: skip
    assert health_verdict(cmd, 0, None, True) == (
        False, f"health command {cmd} did not end in time after the move")  # fmt: skip
    assert health_verdict(cmd, 0, None, False) == (
        False, f"health command {cmd} could not run after the move (no agent)")  # fmt: skip
    # a command that did not pass before the move proves nothing either way
    assert health_verdict(cmd, 1, 0, True) == (
        None, f"health command {cmd} exited 1 before the move; it is not counted")  # fmt: skip
    assert health_verdict(cmd, None, 0, True)[0] is None
    # a failed health command fails the agent's verdict
    failed = AgentCheck(True, True, True, -200, health_ok=False)
    assert not failed.passed and AgentCheck(True, True, True, -200, health_ok=None).passed
