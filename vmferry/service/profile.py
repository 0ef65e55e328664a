"""`vmferry profile`: sample VMs' workload into the store and summarise it.

Every ``interval`` seconds, one bulk statistics call per host (CPU, balloon, disks,
interfaces: :mod:`vmferry.drivers.libvirt_stats`) and QEMU's dirty-rate measurement,
started at one sample and read at the next. Each sample is stored as it is taken, so
Ctrl-C keeps everything sampled so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_stats import (
    DomainCounters,
    rates,
    read_counters,
    read_dirty_rate,
    start_dirty_rate,
)
from vmferry.errors import BadInputError, NotFoundError
from vmferry.model import Host, VmState
from vmferry.model.workload import ProfileSample
from vmferry.predict.profile import ProfileSummary, summarise
from vmferry.service.locate import locate
from vmferry.store.db import Store, open_store

__all__ = ["ProfileRun", "profile", "stored_summary"]

SampleFn = Callable[[ProfileSample], None]
StartFn = Callable[[str, tuple[str, ...]], None]  # (host, the VMs to be sampled)


@dataclass(frozen=True)
class ProfileRun:
    """The samples taken of one VM in this run and the summary of them."""

    vm: str
    host: str
    samples: tuple[ProfileSample, ...]
    summary: ProfileSummary
    interrupted: bool = False


def _quiet(_sample: ProfileSample) -> None:
    return None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def profile(
    vm: str | None = None,
    *,
    host: str | None = None,
    duration_s: float = 60,
    interval_s: float = 1,
    dirty_rate: bool = True,
    on_sample: SampleFn = _quiet,
    on_start: StartFn | None = None,
    store: Store | None = None,
) -> list[ProfileRun]:
    """Profile VM ``vm`` (on whichever registered host runs it) or every running VM of
    ``host`` for ``duration_s`` seconds, one sample every ``interval_s``. ``on_start`` is
    told the host and the VMs before the first sample is taken; what it raises ends the
    run before anything is sampled."""
    if (vm is None) == (host is None):
        raise BadInputError("profile either one VM or one host (--host), not both or neither")
    if not 0.2 <= interval_s <= 3600:
        raise BadInputError(f"--interval must be between 0.2 and 3600 s (got {interval_s:g})")
    if not interval_s <= duration_s <= 7 * 86400:
        raise BadInputError(
            f"--duration must be at least the interval ({interval_s:g} s) and "
            f"at most a week (got {duration_s:g})"
        )
    store = store or open_store()
    target: Host
    names: list[str] | None
    if vm is not None:
        found = locate(vm)
        if found.record.state is not VmState.RUNNING:
            raise BadInputError(
                f"VM {vm!r} is {found.record.state} on {found.host.name}; only "
                "a running VM has a workload to profile"
            )
        target, names = found.host, [vm]
    else:
        assert host is not None
        target, names = store.get_host(host), None
    memory: dict[str, int] = {}
    with LibvirtHost.connect(target.name, target.uri) as conn:
        if names is None:
            memory = {
                r.spec.name: r.spec.memory_bytes
                for r in conn.list_vms()
                if r.state is VmState.RUNNING
            }
            names = sorted(memory)
            if not names:
                raise NotFoundError(f"host {target.name!r} runs no VMs to profile")
        else:
            memory = {n: conn.get_vm(n).spec.memory_bytes for n in names}
        if on_start is not None:
            on_start(target.name, tuple(names))
        taken, interrupted, last = _sample_loop(
            conn, target.name, names, duration_s, interval_s, dirty_rate, on_sample, store
        )
    runs = []
    for name in names:
        samples = tuple(taken.get(name, ()))
        counters = last.get(name)
        vcpus = counters.vcpus if counters is not None else 1
        summary = summarise(name, target.name, samples, vcpus, memory.get(name, 0))
        runs.append(ProfileRun(name, target.name, samples, summary, interrupted))
    return runs


def _sample_loop(
    conn: LibvirtHost,
    host: str,
    names: list[str],
    duration_s: float,
    interval_s: float,
    dirty_rate: bool,
    on_sample: SampleFn,
    store: Store,
) -> tuple[dict[str, list[ProfileSample]], bool, dict[str, DomainCounters]]:
    taken: dict[str, list[ProfileSample]] = {n: [] for n in names}
    calc_s = max(1, int(interval_s))
    started = time.monotonic()
    last = read_counters(conn, names, started)
    measuring = {n for n in names if dirty_rate and start_dirty_rate(conn, n, calc_s)}
    interrupted = False
    tick = 0
    try:
        while True:
            tick += 1
            due = started + tick * interval_s
            if due > started + duration_s + 1e-6:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            current = read_counters(conn, [n for n in names if n in last], now)
            at = _now_iso()
            batch = []
            for name, after in current.items():
                metrics = rates(last[name], after)
                if name in measuring:
                    value = read_dirty_rate(conn, name)
                    if value is not None:
                        metrics["dirty_rate_bytes_s"] = value
                        measuring.discard(name)
                if dirty_rate and name not in measuring and start_dirty_rate(conn, name, calc_s):
                    measuring.add(name)
                batch.append(ProfileSample(vm=name, host=host, taken_at=at, metrics=metrics))
            last.update(current)
            store.add_profile_samples(batch)
            for sample in batch:
                taken[sample.vm].append(sample)
                on_sample(sample)
    except KeyboardInterrupt:
        interrupted = True  # what was sampled is stored already
    return taken, interrupted, last


def stored_summary(
    vm: str,
    *,
    since: str | None = None,
    store: Store | None = None,
    vcpus: int | None = None,
    memory_bytes: int | None = None,
) -> ProfileSummary | None:
    """The summary of VM ``vm``'s stored samples (since ``since``), None without samples.
    vCPUs and memory default to those of the newest sample."""
    store = store or open_store()
    samples = store.profile_samples(vm, since=since)
    if not samples:
        return None
    newest = samples[-1]
    vcpus = vcpus or int(newest.get("vcpus") or 1)
    memory_bytes = memory_bytes or int(newest.get("memory_bytes") or 0)
    return summarise(vm, newest.host, samples, vcpus, memory_bytes)
