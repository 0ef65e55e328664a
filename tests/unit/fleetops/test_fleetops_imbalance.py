"""The imbalance metric on hand-computed fleets, and the hysteresis rule."""

from __future__ import annotations

import math

import pytest

from vmferry.errors import BadInputError
from vmferry.fleetops.imbalance import host_loads, imbalance, pstdev, should_act
from vmferry.fleetops.model import HostLoad, VmLoad

GIB = 2**30


def host(name: str, cpus: int = 10, memory_gib: int = 100, **kw: object) -> HostLoad:
    return HostLoad(name=name, cpus=cpus, memory_bytes=memory_gib * GIB, cpu_key="a", **kw)  # type: ignore[arg-type]


def vm(name: str, on: str, cores: float, used_gib: float) -> VmLoad:
    return VmLoad(name=name, host=on, vcpus=8, memory_bytes=64 * GIB, cpu_demand=cores,
                  memory_demand_bytes=round(used_gib * GIB))  # fmt: skip


# h1: 6 cores of 10, 50 GiB of 100; h2: 2 cores, 30 GiB
TWO = ([host("h1"), host("h2")], [vm("a", "h1", 6, 50), vm("b", "h2", 2, 30)])


@pytest.mark.parametrize(
    ("metric", "loads", "expected"),
    [
        ("cpu", {"h1": 0.6, "h2": 0.2}, 0.2),
        ("memory", {"h1": 0.5, "h2": 0.3}, 0.1),
        ("both", {"h1": 0.55, "h2": 0.25}, 0.15),
    ],
)
def test_the_three_metrics_on_two_hosts(
    metric: str, loads: dict[str, float], expected: float
) -> None:
    assert host_loads(*TWO, metric) == pytest.approx(loads)
    assert imbalance(*TWO, metric) == pytest.approx(expected)


def test_population_standard_deviation_of_three_hosts() -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("a", "h1", 1, 0), vm("b", "h2", 4, 0), vm("c", "h3", 7, 0)]
    # loads 0.1, 0.4, 0.7: deviations -0.3, 0, 0.3 over n = 3 (not n - 1)
    assert imbalance(hosts, vms, "cpu") == pytest.approx(math.sqrt(0.06))


def test_load_is_relative_to_capacity_and_an_empty_host_counts() -> None:
    hosts = [host("big", cpus=20), host("small", cpus=4)]
    vms = [vm("a", "big", 10, 0), vm("b", "small", 2, 0)]
    assert imbalance(hosts, vms, "cpu") == pytest.approx(0.0)
    assert imbalance([*hosts, host("empty")], vms, "cpu") == pytest.approx(math.sqrt(2 / 9) / 2)


def test_a_host_in_maintenance_is_outside_the_metric() -> None:
    hosts = [*TWO[0], host("m", in_maintenance=True)]
    vms = [*TWO[1], vm("c", "m", 9, 90)]
    assert "m" not in host_loads(hosts, vms, "cpu")
    assert imbalance(hosts, vms, "cpu") == pytest.approx(0.2)


def test_pstdev_of_nothing_is_zero() -> None:
    assert pstdev([]) == 0.0


@pytest.mark.parametrize(
    ("hosts", "vms", "metric", "words"),
    [
        (TWO[0], TWO[1], "disk", "unknown metric 'disk'"),
        (TWO[0], [vm("a", "nope", 1, 1)], "cpu", "vm a: host nope does not exist"),
        ([host("h1"), host("h1")], [], "cpu", "duplicate host names: h1"),
    ],
)
def test_bad_fleets(hosts: list[HostLoad], vms: list[VmLoad], metric: str, words: str) -> None:
    with pytest.raises(BadInputError, match=words) as caught:
        imbalance(hosts, vms, metric)
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("value", "act"), [(0.11, False), (0.12, False), (0.1201, True), (0.3, True)]
)
def test_act_only_past_the_hysteresis_band(value: float, act: bool) -> None:
    assert should_act(value, 0.1, hysteresis=0.2) is act


def test_no_hysteresis_acts_just_above_the_threshold() -> None:
    assert should_act(0.1001, 0.1, hysteresis=0.0)
    assert not should_act(0.1, 0.1, hysteresis=0.0)


def test_negative_hysteresis_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="hysteresis"):
        should_act(0.5, 0.1, hysteresis=-0.1)
