"""Consolidation's pure planner (fleetops/consolidate.py) and its lower bound
(fleetops/packing_bound.py): which hosts to empty, the moves, why the others stay."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fleets import fleets, host, vm

from vmferry.errors import BadInputError
from vmferry.fleetops.consolidate import MAINTENANCE, consolidate
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.fleetops.packing_bound import hosts_needed
from vmferry.fleetops.power import DpmBand
from vmferry.fleetops.state import FleetState

GIB = 2**30


def pairs(result: object) -> list[tuple[str, str, str]]:
    return [(m.vm, m.source, m.destination) for m in result.moves]  # type: ignore[attr-defined]


# cpu loads 0.1, 0.2, 0.3: freeing a then b leaves c at 0.6 (under the 0.63 target)
THREE = [host("a"), host("b"), host("c")]
LIGHT = [vm("a1", "a"), vm("b1", "b"), vm("b2", "b"), vm("c1", "c"), vm("c2", "c"), vm("c3", "c")]


def test_the_cheapest_hosts_are_emptied_onto_the_fullest() -> None:
    found = consolidate(THREE, LIGHT, metric="cpu")
    assert found.hosts_freed == ("a", "b")
    assert pairs(found) == [("a1", "a", "c"), ("b1", "b", "c"), ("b2", "b", "c")]
    assert found.kept == (("c", "takes VMs from a, b"),)
    assert found.utilisation_after == {"c": pytest.approx(0.6)}
    assert all(m.predicted_bytes > 0 and m.predicted_seconds > 0 for m in found.moves)
    assert (found.at_least_kept, found.cap, found.metric) == (1, 0.8, "cpu")


def test_the_target_keeps_hosts_that_would_lift_the_fleet_above_it() -> None:
    busy = [*LIGHT, vm("c4", "c"), vm("c5", "c")]  # 8 cores on 30: two hosts left = 0.4
    found = consolidate(THREE, busy, metric="cpu")
    assert found.hosts_freed == ("a",)
    assert (
        dict(found.kept)["b"] == "freeing it lifts the hosts that stay to 80%, above the 63% target"
    )
    higher = consolidate(THREE, busy, metric="cpu", band=DpmBand(target=0.85, tolerance=0.1))
    assert higher.hosts_freed == ("a", "b")  # c at 0.8: the headroom's cap, under 0.85
    assert higher.utilisation_after == {"c": pytest.approx(0.8)}


def test_anti_affinity_forces_a_host_to_stay_and_nothing_of_it_moves() -> None:
    vms = [vm("db1", "a", group="db"), vm("web", "a"), vm("db2", "b", group="db"),
           vm("db3", "c", group="db")]  # fmt: skip
    found = consolidate(THREE, vms, metric="cpu")
    assert found.hosts_freed == ()
    assert found.moves == ()
    assert dict(found.kept) == {h: f"db{i}: each host with its CPU and room holds one of db"
                                for i, h in enumerate("abc", start=1)}  # fmt: skip


def test_a_vm_too_big_for_any_other_host_keeps_its_host_whole() -> None:
    vms = [vm("small", "a", 0.5), vm("huge", "a", 0.5, given_gib=90), vm("b1", "b", given_gib=20),
           vm("c1", "c", given_gib=20)]  # fmt: skip
    found = consolidate(THREE, vms, metric="cpu")
    assert found.hosts_freed == ("b",)
    assert pairs(found) == [("b1", "b", "c")]  # a has no room for 20 GiB more: 94 given of 100
    assert dict(found.kept) == {  # small could go, but a is not half emptied
        "a": "huge: no host with its CPU has room within 20% headroom",
        "c": "takes VMs from b",
    }


def test_a_vm_pinned_to_a_cpu_key_keeps_the_only_host_of_that_key() -> None:
    hosts = [host("a", key="icelake"), host("b"), host("c")]
    vms = [vm("pinned", "a", key="icelake"), vm("b1", "b"), vm("b2", "b"),
           vm("c1", "c", given_gib=2)]  # fmt: skip
    found = consolidate(hosts, vms, metric="cpu")
    assert (found.hosts_freed, pairs(found)) == (("c",), [("c1", "c", "b")])
    assert dict(found.kept) == {
        "a": "pinned: no host outside maintenance has its CPU (icelake)",
        "b": "takes VMs from c",
    }


def test_an_empty_fleet_frees_all_hosts_but_min_hosts() -> None:
    found = consolidate(THREE, [], metric="cpu")
    assert (found.hosts_freed, found.moves) == (("a", "b"), ())
    assert found.kept == (("c", "at least 1 host(s) stay powered"),)
    assert found.at_least_kept == 1
    two = consolidate(THREE, [], metric="cpu", min_hosts=2)
    assert two.hosts_freed == ("a",) and two.at_least_kept == 2
    nothing = consolidate([], [])
    assert (nothing.hosts_freed, nothing.kept, nothing.utilisation_after) == ((), (), {})
    assert nothing.at_least_kept == 0


def test_one_host_stays() -> None:
    found = consolidate([host("a")], [vm("v", "a")])
    assert (found.hosts_freed, found.kept) == ((), (("a", "at least 1 host(s) stay powered"),))
    assert found.utilisation_after == {"a": pytest.approx((0.1 + 0.01) / 2)}


def test_a_host_in_maintenance_is_neither_freed_nor_a_destination() -> None:
    hosts = [host("a"), host("b"), host("m", maintenance=True)]
    found = consolidate(hosts, [vm("a1", "a"), vm("b1", "b"), vm("b2", "b"), vm("m1", "m")],
                        metric="cpu")  # fmt: skip
    assert pairs(found) == [("a1", "a", "b")]
    assert dict(found.kept) == {"b": "takes VMs from a", "m": MAINTENANCE}
    assert set(found.utilisation_after) == {"b"}


def test_a_host_kept_by_the_caller_stays_with_its_reason_and_may_take_vms() -> None:
    found = consolidate(THREE, LIGHT, metric="cpu", keep={"a": "its power automation is manual"})
    assert found.hosts_freed == ("b",)
    assert pairs(found) == [("b1", "b", "c"), ("b2", "b", "c")]
    assert dict(found.kept)["a"] == "its power automation is manual"
    everything = consolidate(THREE, LIGHT, metric="cpu", keep={h.name: "no" for h in THREE})
    assert (everything.hosts_freed, everything.moves) == ((), ())


def test_max_moves_keeps_hosts_whose_moves_would_pass_it() -> None:
    found = consolidate(THREE, LIGHT, metric="cpu", max_moves=2)
    assert found.hosts_freed == ("a",) and len(found.moves) == 1
    assert dict(found.kept)["b"] == "emptying it takes 2 moves, over --max-moves 2 (1 chosen)"
    assert consolidate(THREE, LIGHT, metric="cpu", max_moves=0).moves == ()


def test_hosts_are_tried_cheapest_to_empty_first() -> None:
    # a's VM dirties memory fast: its move sends more than b's two quiet ones
    vms = [vm("a1", "a", 0.5, dirty=400e6, given_gib=16, used_gib=16), vm("b1", "b", 1),
           vm("b2", "b", 1), vm("c1", "c", 3.5, given_gib=64, used_gib=32)]  # fmt: skip
    found = consolidate(THREE, vms, metric="cpu")
    assert found.hosts_freed == ("b", "a")  # a is the least loaded, but b costs less
    assert [m.source for m in found.moves] == ["b", "b", "a"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"headroom": 1.0}, "headroom must be in [0, 1)"),
        ({"metric": "disk"}, "unknown metric 'disk'"),
        ({"max_moves": -1}, "max_moves must be >= 0"),
        ({"min_hosts": 0}, "min_hosts must be >= 1"),
        ({"link_bytes_s": 0}, "link rate must be > 0"),
    ],
)
def test_bad_options_are_bad_input(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(words)):
        consolidate(THREE, LIGHT, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="host z does not exist"):
        consolidate(THREE, [vm("v", "z")])


def test_same_input_same_output_whatever_its_order() -> None:
    rng = random.Random(4)
    hosts = [host(f"h{i}", cpus=rng.choice((8, 16))) for i in range(8)]
    vms = [vm(f"v{i}", f"h{rng.randrange(8)}", rng.uniform(0.1, 2)) for i in range(30)]
    first = consolidate(hosts, vms)
    rng.shuffle(hosts)
    rng.shuffle(vms)
    assert consolidate(hosts, vms) == first


def test_the_lower_bound_counts_resources_groups_and_cpu_keys() -> None:
    def needed(hosts: list[HostLoad], vms: list[VmLoad], target: float = 0.9) -> int:
        return hosts_needed(hosts, vms, metric="cpu", cap=0.8, target=target)

    four = [host(f"h{i}") for i in range(4)]
    assert needed(four, [vm(f"v{i}", "h0", 2) for i in range(6)]) == 2  # 12 cores / 8
    assert needed(four, [vm(f"v{i}", "h0", 2) for i in range(6)], target=0.35) == 4
    assert needed(four, [vm(f"v{i}", f"h{i}", group="g") for i in range(3)]) == 3
    keyed = [host("x", key="x"), host("y", key="y"), *four]
    assert needed(keyed, [vm("vx", "x", key="x"), vm("vy", "y", key="y")]) == 2
    assert needed(four, [vm("huge", "h0", 50)]) == 4  # nothing fits: every host stays
    assert needed(four, []) == 1 and needed([], []) == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(1), st.sampled_from(("cpu", "memory", "both")), st.sampled_from((0.0, 0.2, 0.5)))
def test_freed_hosts_are_empty_every_move_keeps_the_rules_and_the_bound_holds(
    fleet: tuple[list[HostLoad], list[VmLoad]], metric: str, headroom: float
) -> None:
    hosts, vms = fleet
    found = consolidate(hosts, vms, metric=metric, headroom=headroom)
    replay = FleetState(hosts, vms, metric, 1 - found.cap)
    index = {v.name: i for i, v in enumerate(vms)}
    names = [h.name for h in hosts]
    for move in found.moves:
        v, dest = index[move.vm], names.index(move.destination)
        assert move.destination not in found.hosts_freed
        assert replay.refusal(v, dest) is None, move
        replay.move(v, dest)
    assert len({m.vm for m in found.moves}) == len(found.moves)  # each VM once
    on_freed = {v.name for v in vms if v.host in found.hosts_freed}
    assert on_freed == {m.vm for m in found.moves}  # exactly the freed hosts' VMs move
    active = [h.name for h in hosts if not h.in_maintenance]
    staying = len(active) - len(found.hosts_freed)
    assert found.at_least_kept <= staying
    assert {h for h, _ in found.kept} | set(found.hosts_freed) == set(names)
    assert set(found.utilisation_after) == set(active) - set(found.hosts_freed)
