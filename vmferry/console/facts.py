"""The hosts' facts the fleet page draws its bars from (logical CPUs, memory and free
memory, as libvirt reports them), read at most once every ``ttl_s`` seconds per server.

A function of the store's hosts, so the tests give the console their own
(:class:`vmferry.console.ConsoleConfig`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from vmferry.errors import VmferryError
from vmferry.model.hostinfo import HostInfo
from vmferry.store.db import Store

__all__ = ["CachedFacts", "HostFactsFn", "libvirt_facts"]

# host name -> its facts, or why they could not be read
HostFactsFn = Callable[[Store], dict[str, HostInfo | str]]


def libvirt_facts(store: Store, *, timeout_s: float = 5) -> dict[str, HostInfo | str]:
    """Every registered host's facts, asked of its libvirt (a host that does not answer:
    the reason, in words)."""
    from vmferry.drivers.libvirt_host import LibvirtHost

    found: dict[str, HostInfo | str] = {}
    for host in store.list_hosts():
        try:
            with LibvirtHost.connect(host.name, host.uri, timeout_s=timeout_s) as conn:
                found[host.name] = conn.info()
        except VmferryError as exc:
            found[host.name] = exc.message
    return found


class CachedFacts:
    """``read``'s answer, reused for ``ttl_s`` seconds (one reader at a time)."""

    def __init__(self, read: HostFactsFn, ttl_s: float = 10) -> None:
        self.read, self.ttl_s = read, ttl_s
        self._lock = threading.Lock()
        self._at = 0.0
        self._facts: dict[str, HostInfo | str] = {}

    def __call__(self, store: Store) -> dict[str, HostInfo | str]:
        with self._lock:
            if not self._facts or time.monotonic() - self._at > self.ttl_s:
                self._facts = self.read(store)
                self._at = time.monotonic()
            return dict(self._facts)
