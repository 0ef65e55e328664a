"""The guest's pause from libvirt's lifecycle events (drivers.libvirt_events)."""

from __future__ import annotations

import itertools

import libvirt

from vmferry.drivers.libvirt_events import PauseTimes, PauseWatch
from vmferry.model import Host

SUSPENDED = libvirt.VIR_DOMAIN_EVENT_SUSPENDED
RESUMED = libvirt.VIR_DOMAIN_EVENT_RESUMED


def _watch(times: list[float]) -> PauseWatch:
    """A watch whose clock reads ``times`` in turn, then a second later at each reading (so
    stop() does not wait long for a resume that will not come)."""
    clock = itertools.chain(times, itertools.count(3600.0))
    return PauseWatch("vm1", Host("kvm1", "qemu:///a"), Host("kvm2", "qemu:///b"),
                      clock=lambda: float(next(clock)))  # fmt: skip


def test_the_pause_runs_from_the_sources_suspension_to_the_destinations_resumption() -> None:
    watch = _watch([10.000, 10.250, 10.300, 10.301])
    watch._on_event("source", "vm1", SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED)
    watch._on_event("destination", "vm1", RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED)
    assert watch.stop() == PauseTimes(10.000, 10.250)
    assert PauseTimes(10.000, 10.250).pause_ms == 250


def test_other_vms_other_hosts_and_other_events_do_not_count() -> None:
    watch = _watch([1.0, 2.0, 3.0, 4.0])
    watch._on_event("source", "vm2", SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED)
    watch._on_event("destination", "vm1", SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED)
    watch._on_event("source", "vm1", SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)
    watch._on_event("source", "vm1", RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED)
    watch._on_event("source", "vm1", SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY)
    times = watch.stop()
    assert times.paused_at == 4.0 and times.resumed_at is None and times.pause_ms is None


def test_a_resume_before_the_pause_or_a_missing_event_measures_nothing() -> None:
    assert PauseTimes(None, 3.0).pause_ms is None
    assert PauseTimes(3.0, None).pause_ms is None
    assert PauseTimes(3.0, 2.0).pause_ms is None


def test_after_post_copy_the_pause_ends_at_the_first_resumption_not_the_last() -> None:
    watch = _watch([10.000, 10.080, 12.900, 12.901])
    watch._on_event("source", "vm1", SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY)
    watch._on_event("destination", "vm1", RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY)
    # the last page arrived: the destination says RESUMED again, the guest ran meanwhile
    watch._on_event("destination", "vm1", RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED)
    watch._on_qmp("destination", "vm1", 10.079)
    watch._on_qmp("destination", "vm1", 12.899)
    times = watch.stop()
    assert (times.paused_at, times.resumed_at, times.pause_ms) == (10.000, 10.080, 80)
    assert times.qemu_resume_at == 10.079
