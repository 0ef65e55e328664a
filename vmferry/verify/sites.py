"""The site registry: what a site knows about its VMs that libvirt does not tell.

A *site* is a set of VMs some code knows more about than their hosts' libvirt does; vmferry's
own lab is one. A site plugin may offer, per VM:

- a witness that watches the VM while it moves (:class:`~vmferry.verify.witness.Witness`);
- the IP addresses it has seen for MAC addresses (used by the network pre-flight's ARP
  probe and the FDB check after a move);
- a vantage point to prove the VM's port profiles from its users' side
  (:class:`~vmferry.verify.profile_checks.Prober`);
- a note of where the VM went, after a completed move.

Plugins are found through the ``vmferry.sites`` entry point group (``pyproject.toml``), so
vmferry never imports them; a test may also :func:`register` one for the length of the
process. Every method may return ``None`` (or nothing) for a VM the site does not know.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Protocol

from vmferry.model.migration import Strategy
from vmferry.verify.profile_checks import Prober
from vmferry.verify.witness import NoWitness, Witness

ENTRY_POINT_GROUP = "vmferry.sites"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Vantage:
    """Where a VM's services can be reached from: its address, the TCP ports it listens on,
    and a prober placed where its users are."""

    address: str
    ports: tuple[int, ...]
    prober: Prober


class SitePlugin(Protocol):
    name: str

    def witness(self, vm: str, strategy: Strategy) -> Witness | None: ...

    def known_addresses(self) -> Mapping[str, Iterable[str]]: ...

    def vantage(self, vm: str) -> Vantage | None: ...

    def moved(self, vm: str, host: str) -> None: ...


_registered: list[SitePlugin] = []


@cache
def _discovered() -> tuple[SitePlugin, ...]:
    found: list[SitePlugin] = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            factory = entry.load()
            found.append(factory())
        except Exception as exc:  # a broken plugin must not stop a move
            log.warning("site plugin %s could not be loaded: %s", entry.name, exc)
    return tuple(found)


def register(plugin: SitePlugin) -> None:
    """Add a plugin for the rest of this process (before the discovered ones)."""
    _registered.insert(0, plugin)


def unregister(plugin: SitePlugin) -> None:
    if plugin in _registered:
        _registered.remove(plugin)


def plugins() -> tuple[SitePlugin, ...]:
    return (*_registered, *_discovered())


def witness_for(vm: str, strategy: Strategy) -> Witness:
    """The first witness a site offers for ``vm``, or :class:`NoWitness`."""
    for plugin in plugins():
        witness = plugin.witness(vm, strategy)
        if witness is not None:
            return witness
    return NoWitness()


def known_addresses() -> dict[str, set[str]]:
    """MAC (lower case) -> the addresses every site has seen for it."""
    seen: dict[str, set[str]] = {}
    for plugin in plugins():
        for mac, addrs in plugin.known_addresses().items():
            seen.setdefault(mac.lower(), set()).update(addrs)
    return seen


def vantage_for(vm: str) -> Vantage | None:
    for plugin in plugins():
        vantage = plugin.vantage(vm)
        if vantage is not None:
            return vantage
    return None


def note_moved(vm: str, host: str) -> None:
    """Tell every site that ``vm`` now runs on ``host``."""
    for plugin in plugins():
        plugin.moved(vm, host)
