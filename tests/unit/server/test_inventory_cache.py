"""The server's inventory cache: one reading of the hosts per key and time-to-live, shared
by concurrent requests; no cache at ttl 0."""

from __future__ import annotations

import threading
from typing import Any

from vmferry.server.inventory_cache import CachedInventory
from vmferry.service.fleet import Fleet


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counting_source(calls: list[str | None], gate: threading.Event | None = None) -> Any:
    def source(store: object, host: str | None) -> Fleet:
        calls.append(host)
        if gate is not None:
            assert gate.wait(5)
        return Fleet([], {"note": f"reading {len(calls)}"})

    return source


def test_a_reading_is_reused_within_its_ttl_per_host() -> None:
    calls: list[str | None] = []
    clock = Clock()
    cache = CachedInventory(counting_source(calls), 5, clock)
    first = cache(None, None)  # type: ignore[arg-type]
    assert cache(None, None) is first  # type: ignore[arg-type]
    cache(None, "kvm1")  # type: ignore[arg-type]
    assert calls == [None, "kvm1"]
    clock.now += 4.9
    assert cache(None, None) is first  # type: ignore[arg-type]
    clock.now += 0.2
    assert cache(None, None) is not first  # type: ignore[arg-type]
    assert calls == [None, "kvm1", None]


def test_ttl_zero_reads_every_time() -> None:
    calls: list[str | None] = []
    cache = CachedInventory(counting_source(calls), 0)
    for _ in range(3):
        cache(None, None)  # type: ignore[arg-type]
    assert calls == [None, None, None]


def test_concurrent_requests_share_one_reading() -> None:
    calls: list[str | None] = []
    gate = threading.Event()
    cache = CachedInventory(counting_source(calls, gate), 5)
    got: list[Fleet] = []
    threads = [threading.Thread(target=lambda: got.append(cache(None, None)))  # type: ignore[arg-type]
               for _ in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert calls == [None]
    assert len(got) == 8 and all(fleet is got[0] for fleet in got)
