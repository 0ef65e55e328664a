"""The site registry: a plugin's witness, addresses, vantage and move notes reach vmferry,
and the lab is found through its entry point, never imported by the product."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import pytest

from vmferry.model.migration import Strategy
from vmferry.verify import sites
from vmferry.verify.witness import NoWitness, Witness, WitnessReport


class QuietWitness:
    def start(self) -> None:
        return None

    def finish(self, moved: bool, *, running: bool = True) -> WitnessReport:
        return WitnessReport(7, "ok", None, None)


class Prober:
    def port_open(self, addr: str, port: int) -> bool:
        return port == 22

    def transfer_rate(self, addr: str, nbytes: int, *, to_vm: bool) -> float:
        return 1.0


class FakeSite:
    name = "fake"

    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []

    def witness(self, vm: str, strategy: Strategy) -> Witness | None:
        return QuietWitness() if vm == "known" and strategy is not Strategy.COLD else None

    def known_addresses(self) -> Mapping[str, Iterable[str]]:
        return {"52:54:00:AA:BB:CC": ["10.0.0.5"]}

    def vantage(self, vm: str) -> sites.Vantage | None:
        return sites.Vantage("10.0.0.5", (22,), Prober()) if vm == "known" else None

    def moved(self, vm: str, host: str) -> None:
        self.moves.append((vm, host))


@pytest.fixture
def fake() -> Iterator[FakeSite]:
    site = FakeSite()
    sites.register(site)
    yield site
    sites.unregister(site)


def test_a_registered_site_gives_its_vms_witness_vantage_and_hears_of_moves(
    fake: FakeSite,
) -> None:
    assert isinstance(sites.witness_for("known", Strategy.LIVE), QuietWitness)
    assert isinstance(sites.witness_for("known", Strategy.COLD), NoWitness)
    assert isinstance(sites.witness_for("stranger", Strategy.LIVE), NoWitness)
    vantage = sites.vantage_for("known")
    assert vantage is not None and vantage.prober.port_open(vantage.address, 22)
    assert sites.vantage_for("stranger") is None
    assert sites.known_addresses()["52:54:00:aa:bb:cc"] == {"10.0.0.5"}
    sites.note_moved("known", "kvm2")
    assert fake.moves == [("known", "kvm2")]


def test_the_lab_is_a_site_found_through_its_entry_point() -> None:
    names = [p.name for p in sites.plugins()]
    assert "lab" in names
    assert type(sites.plugins()[names.index("lab")]).__module__ == "vmferry.lab.site"
