"""The server's inventory, read from the hosts at most once every ``ttl_s`` seconds.

Reading a host's VMs costs a few libvirt calls per VM (``service.fleet``): with 10,000 VMs
every page of ``GET /vms`` would read them all again (bench/api.py measures both). The
server keeps the last reading of each host (or of all) and answers from it while it is
younger than ``ttl_s``; one request at a time refreshes a stale one, the others wait for it
rather than read the hosts too. ``ttl_s == 0`` reads the hosts at every request.
A move started through the API locates its VM afresh (``service.locate``), never from here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vmferry.service.fleet import Fleet
from vmferry.store.db import Store

__all__ = ["CachedInventory"]

Source = Callable[[Store, str | None], Fleet]


@dataclass(frozen=True)
class _Reading:
    fleet: Fleet
    at: float  # time.monotonic()


class CachedInventory:
    """``source`` (``service.fleet.fleet_inventory``), remembered ``ttl_s`` seconds per host
    (``None``: every host)."""

    def __init__(self, source: Source, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.source, self.ttl_s, self.clock = source, ttl_s, clock
        self._readings: dict[str | None, _Reading] = {}
        self._locks: dict[str | None, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, store: Store, host: str | None) -> Fleet:
        if self.ttl_s <= 0:
            return self.source(store, host)
        fresh = self._fresh(host)
        if fresh is not None:
            return fresh
        with self._guard:
            lock = self._locks.setdefault(host, threading.Lock())
        with lock:  # one reader of the hosts per key; the others take its reading
            fresh = self._fresh(host)
            if fresh is not None:
                return fresh
            fleet = self.source(store, host)
            self._readings[host] = _Reading(fleet, self.clock())
            return fleet

    def _fresh(self, host: str | None) -> Fleet | None:
        reading = self._readings.get(host)
        if reading is not None and self.clock() - reading.at < self.ttl_s:
            return reading.fleet
        return None
