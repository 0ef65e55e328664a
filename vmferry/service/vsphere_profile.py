"""`vmferry profile vsphere://SOURCE/VM`: a vSphere VM's workload from vCenter's statistics.

One login, the VM found, its realtime statistics of the last ``since_s`` seconds read in one
``QueryPerf`` call (:meth:`vmferry.drivers.vsphere.VsphereSession.performance`), turned into
the same workload samples a KVM VM's profile stores
(:func:`vmferry.sources.vsphere_perf.samples_from_perf`), stored under the VM's name with
``vsphere://SOURCE`` as the host (a sample already stored is not stored twice), and
summarised with the same right-sizing. Nothing is sampled from now on: vCenter already
measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from vmferry.drivers.vsphere import vsphere_session
from vmferry.errors import BadInputError
from vmferry.model.workload import ProfileSample
from vmferry.predict.profile import summarise
from vmferry.service.profile import ProfileRun
from vmferry.service.vsphere_sources import get_source
from vmferry.sources.vsphere_inventory import vm_from_raw
from vmferry.sources.vsphere_perf import COUNTERS, samples_from_perf
from vmferry.store.db import Store, open_store

__all__ = ["REALTIME_KEPT_S", "profile_many", "profile_vsphere"]

MIB = 2**20
#: How far back vCenter keeps its realtime (20 s) statistics.
REALTIME_KEPT_S = 3600


def profile_vsphere(source: str, vm: str, password: str, *, since_s: float = REALTIME_KEPT_S,
                    store: Store | None = None) -> ProfileRun:  # fmt: skip
    """The profile of VM ``vm`` of vSphere source ``source`` over the last ``since_s``
    seconds (20 to 3600: what vCenter keeps at 20 s); one line, exit 2, for a source or VM
    that does not exist or a span outside that."""
    return profile_many(source, [vm], password, since_s=since_s, store=store)[vm]


def profile_many(source: str, vms: Sequence[str], password: str, *,
                 since_s: float = REALTIME_KEPT_S,
                 store: Store | None = None) -> dict[str, ProfileRun]:  # fmt: skip
    """:func:`profile_vsphere` of several VMs of one source, through one login."""
    if not 20 <= since_s <= REALTIME_KEPT_S:
        raise BadInputError(f"--duration {since_s:g}: vCenter keeps its realtime statistics "
                            f"(a sample every 20 s) for about an hour: 20 to "
                            f"{REALTIME_KEPT_S} s")  # fmt: skip
    store = store or open_store()
    registered = get_source(source, store)
    host = f"vsphere://{source}"
    runs: dict[str, ProfileRun] = {}
    with vsphere_session(registered, password) as session:
        for vm in vms:
            handle = session.find_vm(vm)
            found = vm_from_raw(handle.raw, handle.networks)
            if found is None:
                raise BadInputError(f"{vm} on {source} has no configuration yet")
            perf = session.performance(handle, COUNTERS, since_s)
            samples = samples_from_perf(vm, host, perf, found.vcpus, found.memory_mb)
            store.add_profile_samples(_not_stored(store, samples))
            summary = summarise(vm, host, samples, found.vcpus, found.memory_mb * MIB)
            runs[vm] = ProfileRun(vm, host, tuple(samples), summary)
    return runs


def _not_stored(store: Store, samples: list[ProfileSample]) -> list[ProfileSample]:
    """The samples the store does not hold yet (a second profile within the hour reads
    some of the same ones again)."""
    if not samples:
        return []
    host = samples[0].host
    held = {_moment(s.taken_at) for s in store.profile_samples(samples[0].vm,
                                                               since=samples[0].taken_at)
            if s.host == host}  # fmt: skip
    return [s for s in samples if _moment(s.taken_at) not in held]


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
