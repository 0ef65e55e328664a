"""Place for me: capacity, CPU compatibility, anti-affinity, groups, and the messages."""

from __future__ import annotations

from typing import Any

import pytest

from vmferry.errors import BadInputError
from vmferry.plan import PlanInfeasibleError, PlanSpec, place
from vmferry.plan.placement import anti_affinity


def spec(hosts: list[dict[str, Any]], vms: list[dict[str, Any]]) -> PlanSpec:
    return PlanSpec.model_validate({"version": 1, "hosts": hosts, "vms": vms})


def host(name: str, memory_mb: int = 65536, cpus: int = 32, **kw: Any) -> dict[str, Any]:
    return {"name": name, "cpus": cpus, "memory_mb": memory_mb, **kw}


def vm(name: str, source: str = "src", memory_mb: int = 4096, **kw: Any) -> dict[str, Any]:
    return {"name": name, "source": source, "memory_mb": memory_mb, "vcpus": 2, **kw}


def test_infeasible_is_bad_input() -> None:
    assert issubclass(PlanInfeasibleError, BadInputError)


def test_never_back_to_the_source_and_explicit_kept() -> None:
    s = spec([host("src"), host("a"), host("b")], [vm("v1", destination="b"), vm("v2")])
    p = place(s)
    assert p.destinations["v1"] == "b"
    assert p.destinations["v2"] in {"a", "b"}
    assert p.placed == frozenset({"v2"})


def test_capacity_is_respected_largest_first() -> None:
    s = spec(
        [host("src"), host("a", memory_mb=20000), host("b", memory_mb=12000)],
        [vm("big", memory_mb=16000), vm("mid", memory_mb=10000), vm("small", memory_mb=2000)],
    )
    p = place(s)
    assert p.destinations["big"] == "a"
    assert p.destinations["mid"] == "b"
    used = {"a": 0, "b": 0}
    for v in s.vms:
        used[p.destinations[v.name]] += v.memory_mb
    assert used["a"] <= 20000 and used["b"] <= 12000


def test_balances_link_time() -> None:
    hosts = [host("src"), host("fast", link_gbps=10), host("slow", link_gbps=1)]
    s = spec(hosts, [vm(f"v{i}") for i in range(11)])
    p = place(s)
    to_slow = sum(1 for d in p.destinations.values() if d == "slow")
    assert 0 < to_slow < 3  # a 1 Gbit/s link gets about a tenth


def test_cpu_compatibility_by_model_or_family() -> None:
    hosts = [
        host("src"),
        host("intel", cpu_model="Cascadelake-Server", cpu_family="Xeon"),
        host("amd", cpu_model="EPYC-Milan", cpu_family="EPYC"),
    ]
    s = spec(hosts, [vm("x", cpu_model_required="EPYC"), vm("y", cpu_model_required="EPYC-Milan")])
    assert place(s).destinations == {"x": "amd", "y": "amd"}


def test_not_enough_memory_message() -> None:
    hosts = [
        host("src"),
        host("amd", memory_mb=32768, cpu_family="EPYC"),
        host("intel", memory_mb=262144),
    ]
    s = spec(hosts, [vm("db3", memory_mb=65536, cpu_model_required="EPYC")])
    with pytest.raises(PlanInfeasibleError) as info:
        place(s)
    assert info.value.message == (
        "not enough memory on hosts compatible with cpu 'EPYC' for vm db3 "
        "(needs 65536 MB, largest free 32768 MB)"
    )


def test_no_compatible_host_and_cpus() -> None:
    with pytest.raises(PlanInfeasibleError, match=r"cpu compatibility: no host .* 'POWER9'"):
        place(spec([host("src"), host("a")], [vm("p", cpu_model_required="POWER9")]))
    with pytest.raises(
        PlanInfeasibleError, match=r"not enough cpus .*needs 2 vCPUs, largest free 1"
    ):
        place(spec([host("src"), host("a", cpus=1)], [vm("v")]))


def test_explicit_destinations_are_checked() -> None:
    with pytest.raises(PlanInfeasibleError, match="not enough memory on a for the vms sent to it"):
        place(spec([host("src"), host("a", memory_mb=5000)],
                    [vm("v1", destination="a"), vm("v2", destination="a")]))  # fmt: skip
    with pytest.raises(PlanInfeasibleError, match="vm v needs cpu 'EPYC' but its destination a"):
        place(spec([host("src"), host("a", cpu_family="Xeon")],
                   [vm("v", destination="a", cpu_model_required="EPYC")]))  # fmt: skip
    with pytest.raises(PlanInfeasibleError, match="anti-affinity between w2 and w1 fails"):
        place(spec([host("src"), host("a")],
                   [vm("w1", destination="a", anti_affinity=["w2"]),
                    vm("w2", destination="a")]))  # fmt: skip


def test_anti_affinity_spreads_and_expands_groups() -> None:
    s = spec(
        [host("src"), host("a"), host("b"), host("c")],
        [vm("w1", group="web"), vm("w2", group="web"), vm("db", anti_affinity=["web"]),
         vm("x1", anti_affinity=["x2"]), vm("x2")],
    )  # fmt: skip
    avoid = anti_affinity(s)
    assert avoid["db"] == {"w1", "w2"} and avoid["w1"] == {"db"} and avoid["x2"] == {"x1"}
    p = place(s).destinations
    assert p["w1"] == p["w2"]  # a group's unplaced members share a host
    assert p["db"] != p["w1"]
    assert p["x1"] != p["x2"]


def test_anti_affinity_leaves_no_host() -> None:
    s = spec([host("src"), host("a")], [vm("v1", destination="a"), vm("v2", anti_affinity=["v1"])])
    with pytest.raises(PlanInfeasibleError, match=r"anti-affinity: every host .* vm v2 .*\(v1\)"):
        place(s)


def test_group_conflicts_with_anti_affinity() -> None:
    s = spec([host("src"), host("a"), host("b")],
             [vm("web1", group="app", anti_affinity=["web2"]),
              vm("web2", group="app")])  # fmt: skip
    with pytest.raises(PlanInfeasibleError) as info:
        place(s)
    assert info.value.message.startswith(
        "group 'app' conflicts with anti-affinity between web1 and web2"
    )


def test_group_must_fit_one_host_and_its_slots() -> None:
    s = spec([host("src"), host("a", memory_mb=6000), host("b", memory_mb=6000)],
             [vm("g1", group="g"), vm("g2", group="g")])  # fmt: skip
    with pytest.raises(PlanInfeasibleError, match=r"group 'g' \(g1, g2\) \(needs 8192 MB"):
        place(s)
    five = [vm(f"g{i}", memory_mb=100, group="g") for i in range(5)]
    s = spec([host("src", link_gbps=10), host("a", link_gbps=1)], five)
    with pytest.raises(
        PlanInfeasibleError, match=r"concurrency: group 'g' .* 5 migrations at once"
    ):
        place(s)
