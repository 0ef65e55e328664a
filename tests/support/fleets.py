"""Small fleets for the fleet-operations tests: hosts and VMs by keyword, and a Hypothesis
strategy for random fleets (balance's and consolidation's property tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from vmferry.fleetops.model import HostLoad, VmLoad

GIB = 2**30


def host(name: str, cpus: int = 10, memory_gib: int = 100, key: str = "a",
         maintenance: bool = False) -> HostLoad:  # fmt: skip
    return HostLoad(name, cpus, memory_gib * GIB, key, maintenance)


def vm(name: str, on: str, cores: float = 1.0, *, given_gib: int = 4, used_gib: int = 1,
       group: str | None = None, key: str | None = None, dirty: float = 1e6) -> VmLoad:  # fmt: skip
    return VmLoad(name, on, 4, given_gib * GIB, cores, used_gib * GIB, dirty, group, key)


def fleets(min_hosts: int = 1) -> st.SearchStrategy[tuple[list[HostLoad], list[VmLoad]]]:
    """Up to 6 hosts (CPU keys a/b, some in maintenance) and 20 VMs on them (groups, keys)."""

    @st.composite
    def draw_fleet(draw: st.DrawFn) -> tuple[list[HostLoad], list[VmLoad]]:
        count = draw(st.integers(min_hosts, 6))
        hosts = [host(f"h{i}", cpus=draw(st.sampled_from((4, 8, 16))),
                      memory_gib=draw(st.sampled_from((8, 32))), key=draw(st.sampled_from("ab")),
                      maintenance=draw(st.booleans()) and i > 0)
                 for i in range(count)]  # fmt: skip
        vms = [vm(f"v{i}", f"h{draw(st.integers(0, count - 1))}",
                  draw(st.floats(0, 4, allow_nan=False)),
                  given_gib=draw(st.sampled_from((1, 2, 4))),
                  group=draw(st.sampled_from((None, "g1", "g2"))),
                  key=draw(st.sampled_from((None, "a", "b"))))
               for i in range(draw(st.integers(0, 20)))]  # fmt: skip
        return hosts, vms

    return draw_fleet()
