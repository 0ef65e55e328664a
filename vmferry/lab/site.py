"""The lab as a site (:mod:`vmferry.verify.sites`): what it knows about its guests.

vmferry finds this plugin through the ``vmferry.sites`` entry point; it never imports the
lab. For a VM that is not a lab guest, or when no lab is up, every method returns nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vmferry.drivers import bridge
from vmferry.drivers.host_exec import HostExec
from vmferry.errors import VmferryError
from vmferry.lab import client
from vmferry.lab import topology as topo
from vmferry.lab.guests import note_moved
from vmferry.lab.reboot_witness import RebootWitness
from vmferry.lab.state import GuestRecord, load_state
from vmferry.lab.witness import LabWitness
from vmferry.model.migration import Strategy
from vmferry.verify.sites import Vantage
from vmferry.verify.witness import Witness

GUEST_PORTS = (7, 9, 19, 7001)  # what guestd listens on: echo, discard, chargen, control


class ClientProber:
    """Reaches lab guests from the lab's client namespace."""

    def port_open(self, addr: str, port: int) -> bool:
        return client.port_open(addr, port)

    def transfer_rate(self, addr: str, nbytes: int, *, to_vm: bool) -> float:
        return client.transfer_rate(addr, nbytes, to_vm=to_vm)


def _guest(vm: str) -> GuestRecord | None:
    state = load_state()
    return state.guests.get(vm) if state is not None else None


class LabSite:
    name = "lab"

    def witness(self, vm: str, strategy: Strategy) -> Witness | None:
        """The console and echo witness; a cold move reboots the guest, so only its
        heartbeat coming back is watched."""
        guest = _guest(vm)
        if guest is None or not guest.watched:
            return None
        return RebootWitness(guest) if strategy.boots else LabWitness(guest)

    def known_addresses(self) -> Mapping[str, Iterable[str]]:
        """The client namespace's neighbour table, and every guest's declared address."""
        state = load_state()
        if state is None or state.status != "up":
            return {}
        seen: dict[str, set[str]] = {}
        try:
            for mac, addrs in bridge.neighbours(
                HostExec.for_namespace("client", topo.CLIENT_NS)
            ).items():
                seen.setdefault(mac, set()).update(addrs)
        except VmferryError:
            pass
        for guest in state.guests.values():
            seen.setdefault(guest.mac.lower(), set()).add(guest.address)
        return seen

    def vantage(self, vm: str) -> Vantage | None:
        guest = _guest(vm)
        return Vantage(guest.address, GUEST_PORTS, ClientProber()) if guest is not None else None

    def moved(self, vm: str, host: str) -> None:
        note_moved(vm, host)  # the lab's own record follows its guest
