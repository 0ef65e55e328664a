"""The continuous balancer's decisions (fleetops/continuous.py, pure), the recommender's
fixed VMs, and `vmferry watch --balance --power` rounds over libvirt's test driver
(service/fleet_watch.py): the loops measure, decide and say why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import vmferry

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import BadInputError
from vmferry.fleetops.balance import recommend
from vmferry.fleetops.continuous import (
    BalanceMemory,
    BalancePolicy,
    balance_turn,
    note_moves,
    pinned,
)
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.fleetops.power import DpmBand
from vmferry.model import Host
from vmferry.service.fleet_watch import FleetWatch, PowerPolicy, WatchPolicy
from vmferry.store import Store

GIB = 2**30
POLICY = BalancePolicy(threshold=0.1, hysteresis=0.2, persist=2, cooldown_s=60, vm_cooldown_s=600)


def test_it_acts_only_after_persisting_above_the_trigger() -> None:
    memory = BalanceMemory()
    first = balance_turn(POLICY, memory, 0.5, now=0)
    assert not first.act and "(1 of 2 rounds)" in first.why
    second = balance_turn(POLICY, first.memory, 0.5, now=10)
    assert (
        second.act
        and second.why == "imbalance 0.500 above the trigger 0.120 for 2 rounds: balancing"
    )


def test_a_round_under_the_trigger_starts_the_count_again() -> None:
    over = balance_turn(POLICY, BalanceMemory(), 0.5, now=0).memory
    calm = balance_turn(POLICY, over, 0.11, now=10)  # above the threshold, under the trigger
    assert not calm.act and calm.memory.rounds_over == 0
    assert calm.why == "imbalance 0.110 is at or under the trigger 0.120"
    assert not balance_turn(POLICY, calm.memory, 0.5, now=20).act


def test_after_a_run_it_cools_down_and_the_moved_vms_stay_put() -> None:
    memory = note_moves(BalanceMemory(), ["a"], now=100)
    assert memory.last_run_at == 100 and memory.rounds_over == 0
    once = balance_turn(POLICY, memory, 0.5, now=110)
    cooling = balance_turn(POLICY, once.memory, 0.5, now=120)
    assert not cooling.act and cooling.why.endswith("cooling down (40 s left)")
    assert balance_turn(POLICY, cooling.memory, 0.5, now=161).act
    assert pinned(POLICY, memory, now=699) == {"a"}
    assert pinned(POLICY, memory, now=700) == frozenset()


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("threshold", 0.0, "--threshold"), ("threshold", 1.5, "--threshold"),
     ("hysteresis", -0.1, "--hysteresis"), ("persist", 0, "--persist"),
     ("cooldown_s", -1, "cool-downs")],
)  # fmt: skip
def test_bad_settings_are_one_line(field: str, value: float, words: str) -> None:
    with pytest.raises(BadInputError, match=words):
        BalancePolicy(**{field: value})  # type: ignore[arg-type]


def _vm(name: str, host: str, cpu: float) -> VmLoad:
    return VmLoad(name, host, 2, GIB, cpu, GIB // 2)


def test_the_recommender_leaves_fixed_vms_where_they_are() -> None:
    hosts = [HostLoad("h1", 8, 16 * GIB, "x"), HostLoad("h2", 8, 16 * GIB, "x")]
    vms = [_vm("a", "h1", 2.0), _vm("b", "h1", 2.0), _vm("c", "h1", 2.0)]
    free = recommend(hosts, vms, metric="cpu", threshold=0.05)
    assert free.moves and free.moves[0].vm == "a"
    held = recommend(hosts, vms, metric="cpu", threshold=0.05, fixed={"a"})
    assert held.moves and "a" not in [m.vm for m in held.moves]
    none = recommend(hosts, vms, metric="cpu", threshold=0.05, fixed={"a", "b", "c"})
    assert none.moves == () and none.imbalance_after == none.imbalance_before


def test_watch_settings_are_checked() -> None:
    with pytest.raises(BadInputError, match="metric"):
        WatchPolicy(metric="disk")
    with pytest.raises(BadInputError, match="--max-moves"):
        WatchPolicy(max_moves=0)
    with pytest.raises(BadInputError, match="power-on <= power-off"):
        PowerPolicy(on_window_s=60, off_window_s=30)


@pytest.fixture
def one_host(store: Store) -> Iterator[Store]:
    """t1: libvirt's test driver, its "test" VM running (its counters read zero)."""
    store.add_host(Host("t1", "test:///default"))
    with LibvirtHost.connect("t1", "test:///default", own=True):
        yield store


def test_a_watch_round_samples_the_vms_then_decides(one_host: Store) -> None:
    ticks = iter([0.0, 10.0, 20.0])
    policy = WatchPolicy(balance=POLICY, power=PowerPolicy(DpmBand(0.5, 0.2), 5, 10))
    watch = FleetWatch(policy, one_host, clock=lambda: next(ticks), timeout_s=2)
    first = watch.round()  # counters only: no sample yet
    assert first == ["power: no samples over 10 s for t1", "balance: waiting for samples of test"]
    assert one_host.profile_samples("test") == []
    second = watch.round()
    (sample,) = one_host.profile_samples("test")
    assert (sample.host, sample.get("cpu_share")) == ("t1", 0.0)
    assert second[0] == "power: samples cover only the last 0 s of the 10 s power-off window"
    assert second[1] == "balance: imbalance 0.000 is at or under the trigger 0.120"
    third = watch.round()  # 10 s of demand at 0 %: consolidation may run, frees nothing
    assert third[:2] == ["power: 0% over 10 s is below 30%: consolidation may run",
                         "power: consolidation frees no host"]  # fmt: skip


def test_a_watch_without_loops_does_nothing(one_host: Store) -> None:
    assert FleetWatch(WatchPolicy(), one_host).round() == []
    assert one_host.profile_samples("test") == []


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--balance", "--threshold", "2"], "--threshold must be in (0, 1]"),
     (["--balance", "--metric", "disk"], "metric"),
     (["--power", "--target", "90", "--tolerance", "20"], "tolerance must keep"),
     (["--power", "--headroom", "95"], "--headroom must be in 0-90 %")],
)  # fmt: skip
def test_watch_refuses_bad_settings_in_one_line(
    args: list[str], words: str, tmp_path: Path
) -> None:
    done = vmferry("watch", "--once", *args, db=tmp_path / "x.db")
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
