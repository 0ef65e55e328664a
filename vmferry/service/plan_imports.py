"""The VMs a plan imports from vSphere sources (docs/planning.md, "VMs from vSphere").

`plan create` reads each source's inventory once (:class:`SourceFacts`), fills in what the
plan file leaves out of its VMs (memory, vCPUs, the bytes their disks take), and chooses
each one's import (:func:`choose_import`, pure: warm for a powered-on VM, cold for one
that is off, unless the plan file says); the planner schedules the copy and the cutover
as one migration reading from the source's link. `plan run` imports each such item as
`vmferry import vsphere://SOURCE/VM` does (:func:`run_import_item`), a warm one cutting
over at the time the schedule gave its cutover.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vmferry.errors import BadInputError, VmferryError
from vmferry.imports.mapping import ImportOptions
from vmferry.model.plan_run import ItemStatus, PlanItem
from vmferry.model.vsphere import PASSWORD_ENV, VsphereSource, VsphereVm, VsphereVmRef
from vmferry.plan.schema import PlanSpec, plan_safety
from vmferry.service.import_job import ImportJobRun
from vmferry.service.import_vm import ImportRequest, NoteFn
from vmferry.service.profile import ProfileRun
from vmferry.service.vsphere_sources import get_source, inventory
from vmferry.store.db import Store

__all__ = [
    "IMPORT_CUTOVER_S",
    "ImportChoice",
    "ImportItemResult",
    "ImportTerms",
    "InventoryFn",
    "PasswordFn",
    "ProfilesFn",
    "SourceFacts",
    "choose_import",
    "cutover_time",
    "disk_writes",
    "env_password",
    "import_doc",
    "import_sources",
    "read_profiles",
    "run_import_item",
    "stop_to_start_ms",
]

MIB = 2**20
#: The seconds a cutover takes beyond the copy, for the schedule: the guest's shutdown
#: through VMware Tools, the last changes, the proof, the define and the first boot.
IMPORT_CUTOVER_S = 60.0

PasswordFn = Callable[[VsphereSource], str]
InventoryFn = Callable[[VsphereSource, str], list[VsphereVm]]


def env_password(source: VsphereSource) -> str:
    """The password in ``$VMFERRY_VSPHERE_PASSWORD`` (a server or a worker has no terminal
    to ask on); one line, exit 2, when it is not set."""
    found = os.environ.get(PASSWORD_ENV)
    if found is None:
        raise BadInputError(f"no password for {source.user} at {source.host} (vSphere source "
                            f"{source.name}): set {PASSWORD_ENV}")  # fmt: skip
    return found


def import_sources(items: Sequence[PlanItem]) -> list[str]:
    """The vSphere sources the unfinished items among ``items`` import from, sorted."""
    unfinished = [i for i in items if i.status is not ItemStatus.COMPLETED]
    return sorted({str(i.prediction["import"]["source"]) for i in unfinished
                   if "import" in i.prediction})  # fmt: skip


def disk_bytes(vm: VsphereVm) -> int | None:
    """What an import reads of ``vm``: the bytes its files take on the datastores, else its
    disks' capacities."""
    if vm.committed_bytes:
        return vm.committed_bytes
    return sum(d.capacity_bytes for d in vm.disks) or None


class SourceFacts:
    """The plan file's :data:`vmferry.plan.schema.ImportFacts`: each vSphere source's
    inventory read once (a login refused or a source not registered raises, one line),
    the VMs found kept in ``vms``."""

    def __init__(self, store: Store, password: PasswordFn,
                 read: InventoryFn = inventory) -> None:  # fmt: skip
        self.store, self.password, self.read = store, password, read
        self.vms: dict[tuple[str, str], VsphereVm] = {}
        self.passwords: dict[str, str] = {}  # per source, as given once
        self._inventories: dict[str, list[VsphereVm]] = {}

    def __call__(self, source: str, vm: str) -> dict[str, int] | str:
        if source not in self._inventories:
            registered = get_source(source, self.store)
            self.passwords[source] = self.password(registered)
            try:
                self._inventories[source] = self.read(registered, self.passwords[source])
            except VmferryError as exc:
                raise type(exc)(f"vSphere source {source}: {exc.message}") from exc
        found = next((v for v in self._inventories[source] if v.name == vm), None)
        if found is None:
            return f"no VM {vm!r} on vSphere source {source}"
        self.vms[(source, vm)] = found
        facts = {"memory_mb": found.memory_mb, "vcpus": found.vcpus, "bytes": disk_bytes(found)}
        return {k: v for k, v in facts.items() if v}


@dataclass(frozen=True)
class ImportChoice:
    """How a plan imports one VM: ``strategy`` warm or cold, why, the stop it predicts,
    the seconds its cutover takes at the end of its migration, the whole migration's
    seconds (the copy, then the cutover), and whether it is started on KVM (it ran on
    vSphere)."""

    strategy: str
    reason: str
    downtime_ms: int
    cutover_s: float
    duration_s: float
    start: bool


def choose_import(hint: str, source: str, power_state: str, disk_bytes: int,
                  rate_bytes_s: float, interval_s: float,
                  write_bytes_s: float | None = None) -> ImportChoice:  # fmt: skip
    """The import of a VM in ``power_state`` on vSphere source ``source`` whose disks
    (``disk_bytes``) are read at ``rate_bytes_s``; ``hint`` is the plan file's strategy
    (auto, warm, cold or live-import: stopped, then run on KVM at once while its disks
    stream in); ``write_bytes_s`` its disks' writes (p95 of vCenter's
    statistics; None: not known). A warm import's cutover copies what was written since
    its last precopy: at most ``interval_s`` of writes. Pure."""
    on = power_state == "poweredOn"
    copy_s = disk_bytes / rate_bytes_s
    size = f"{disk_bytes / MIB:.0f} MiB, about {copy_s:.0f} s"
    if on and hint in ("auto", "warm"):
        why = ("set in the plan file (strategy: warm)" if hint == "warm"
               else f"it runs on vSphere source {source}")  # fmt: skip
        changed = 0.0 if write_bytes_s is None else min(disk_bytes, write_bytes_s * interval_s)
        cutover_s = IMPORT_CUTOVER_S + changed / rate_bytes_s
        if write_bytes_s is None:
            writes = ("; its disk writes are not known (no statistics from vCenter): the "
                      "last changes are not counted")  # fmt: skip
        else:
            writes = (f"; its disks are written at {write_bytes_s / MIB:.1f} MiB/s (p95 of "
                      f"vCenter's statistics): the cutover copies up to {changed / MIB:.0f} "
                      "MiB")  # fmt: skip
            if write_bytes_s >= rate_bytes_s:
                writes += (f", and every precopy falls behind (written faster than its "
                           f"{rate_bytes_s / MIB:.1f} MiB/s share reads)")  # fmt: skip
        return ImportChoice("warm", f"{why}: a warm import reads its disks ({size}) while it "
                            f"runs, then what changed every {interval_s:g} s; it stops only "
                            f"for the cutover at the end of its slot (about {cutover_s:.0f} s: "
                            f"shutdown through VMware Tools, the last changes, the first "
                            f"boot){writes}", round(cutover_s * 1000), cutover_s,
                            copy_s + cutover_s, True)  # fmt: skip
    cutover_s = IMPORT_CUTOVER_S
    if on and hint == "live-import":
        return ImportChoice("live-import", f"set in the plan file (strategy: live-import): it "
                            f"is shut down through VMware Tools and runs on KVM at once (about "
                            f"{cutover_s:.0f} s: the shutdown, the first boot) while its disks "
                            f"({size}) stream in behind it, then are proved against the "
                            "datastore", round(cutover_s * 1000), cutover_s,
                            copy_s + cutover_s, True)  # fmt: skip
    if on:
        stop = copy_s + cutover_s
        return ImportChoice("cold", f"set in the plan file (strategy: cold): it is shut down "
                            f"through VMware Tools and stays off while its disks ({size}) "
                            f"are read: about {stop:.0f} s", round(stop * 1000), cutover_s,
                            stop, True)  # fmt: skip
    why = f"it is {power_state} on vSphere source {source}"
    if hint == "warm":
        why = f"set in the plan file (strategy: warm), but {why}: nothing changes while it is off"
    elif hint == "live-import":
        why = (f"set in the plan file (strategy: live-import), but {why}: it is not started "
               "on KVM either")  # fmt: skip
    return ImportChoice("cold", f"{why}: a cold import reads its disks ({size}) once and "
                        "defines it on its destination, where it stays off", 0, cutover_s,
                        copy_s + cutover_s, False)  # fmt: skip


def import_doc(choice: ImportChoice, vm: VsphereVm, source: str, disk_bytes: int,
               end_s: int, write_bytes_s: float | None) -> dict[str, Any]:  # fmt: skip
    """What a plan item keeps of its import (``prediction["import"]``): the source, the VM's
    power state, what is read, its disks' writes (p95, vCenter's statistics; None: not
    known), whether it starts, and a warm one's cutover as seconds from the plan's start
    (its migration's end less the cutover)."""
    cutover_at = max(0, round(end_s - choice.cutover_s)) if choice.strategy == "warm" else None
    return {"source": source, "power_state": vm.power_state, "disk_bytes": disk_bytes,
            "disk_write_bytes_s": write_bytes_s, "start": choice.start,
            "cutover_s": round(choice.cutover_s, 1), "cutover_at_s": cutover_at}  # fmt: skip


ProfilesFn = Callable[[str, Sequence[str], str, Store], dict[str, ProfileRun]]


def read_profiles(source: str, vms: Sequence[str], password: str,
                  store: Store) -> dict[str, ProfileRun]:  # fmt: skip
    """The last hour of vCenter's statistics of ``vms`` (one login), stored as their
    profiles (:func:`vmferry.service.vsphere_profile.profile_many`)."""
    from vmferry.service.vsphere_profile import profile_many

    return profile_many(source, vms, password, store=store)


def disk_writes(run: ProfileRun | None) -> float | None:
    """The p95 of a profile's disk writes (bytes/s), None without one."""
    stat = None if run is None else run.summary.stats.get("disk_write_bytes_s")
    return None if stat is None else stat.p95


def cutover_time(spec: PlanSpec, started_at: str | None, cutover_at_s: float | None,
                 now: datetime) -> datetime | None:  # fmt: skip
    """When a plan's warm import cuts over: ``cutover_at_s`` after the plan's ``start_at``,
    else after its first run began (``started_at``; ``now`` when none). Pure."""
    if cutover_at_s is None:
        return None
    zero = spec.start_at or (datetime.fromisoformat(started_at) if started_at else now)
    if zero.tzinfo is None:
        zero = zero.astimezone()
    return zero + timedelta(seconds=cutover_at_s)


@dataclass(frozen=True)
class ImportTerms:
    """What `plan run` gives one import: the source's password, when a warm one cuts over
    (None: after its first copy), and the bandwidth its schedule gave it (MiB/s of datastore
    reads; None: no cap)."""

    password: str = field(repr=False)
    cutover_at: datetime | None = None
    bandwidth_mib_s: int | None = None


def run_import_item(item: PlanItem, spec: PlanSpec, terms: ImportTerms, note: NoteFn,
                    store: Store | None = None) -> ImportItemResult:  # fmt: skip
    """Import the plan item ``item`` (a VM of a vSphere source) onto its destination as
    `vmferry import vsphere://SOURCE/VM --strategy warm|cold|live-import [--start]
    [--bandwidth]` does, with the source's maps, on ``terms``; its job's result (the
    import's exceptions are raised on)."""
    doc = item.prediction.get("import") or {}
    entry = spec.source(str(doc.get("source")))
    if entry is None:
        raise BadInputError(f"{item.vm}: its source {doc.get('source')!r} is no vSphere source "
                            "of this plan")  # fmt: skip
    _pool, rollback = plan_safety(spec, item.vm)
    ref = VsphereVmRef(entry.name, item.vm, terms.password, rollback=rollback,
                       strategy=item.strategy,
                       precopy_interval_s=spec.defaults.precopy_interval_s,
                       bandwidth_mib_s=terms.bandwidth_mib_s or 0)  # fmt: skip
    request = ImportRequest(
        source=ref,
        to=item.destination,
        options=ImportOptions(
            network_map=dict(entry.network_map), storage_map=dict(entry.storage_map)
        ),
        start=bool(doc.get("start")),
        virt_type=spec.host(item.destination).virt_type,
    )
    run = ImportJobRun(request, terms.cutover_at, store, by="plan")
    began = time.monotonic()
    said: list[tuple[float, str]] = []

    def noted(message: str) -> None:
        said.append((time.monotonic(), message))
        note(message)

    outcome = run.run(noted)
    return ImportItemResult(
        job_id=run.job_id or "",
        total_time_ms=round((time.monotonic() - began) * 1000),
        downtime_ms=stop_to_start_ms(said) if outcome.started else None,
    )


#: The notes of :mod:`vmferry.service.vsphere_import` and :mod:`vmferry.service.vsphere_warm`
#: that say the source VM is being stopped (its downtime begins), and the one of
#: :mod:`vmferry.service.import_vm` just before the VM is started on KVM, or the one of
#: :mod:`vmferry.service.vsphere_live` once it runs there (it ends).
STOP_NOTE = re.compile(r"^(cutover: stopping |shutting .+ down through VMware Tools$|"
                       r"powering .+ off)")  # fmt: skip
START_NOTE = re.compile(r"^(starting |.+ runs on .+ \(\d+ ms after the stop began\))")


def stop_to_start_ms(said: Sequence[tuple[float, str]]) -> int | None:
    """From the first note that the source VM is being stopped to the note that the import
    starts it on KVM (``said``: (monotonic seconds, note)), in ms; None when either is
    missing. Pure."""
    stop = next((at for at, message in said if STOP_NOTE.match(message)), None)
    start = next((at for at, message in said if START_NOTE.match(message)), None)
    if stop is None or start is None or start < stop:
        return None
    return round((start - stop) * 1000)


@dataclass(frozen=True)
class ImportItemResult:
    """What a plan item keeps of its import: its job, its time from start to end, and the
    VM's stop (from the note that it is stopped to its start on KVM; None when it was not
    stopped or not started)."""

    job_id: str
    total_time_ms: int
    downtime_ms: int | None
