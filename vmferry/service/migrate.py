"""`vmferry migrate`: check, then move a running VM live, verify, record."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vmferry.assess.preflight import DiskReach
from vmferry.drivers.libvirt_migration import MigrationRequest
from vmferry.engine.live import LivePlan, NoteFn, ProgressFn, run_live_migration
from vmferry.lab.processes import start_ticks
from vmferry.lab.state import load_state, save_state
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult, Strategy
from vmferry.service.check import CheckReport, check_migration
from vmferry.service.jobs import reconcile_vm
from vmferry.store.db import open_store
from vmferry.verify.witness import LabWitness, NoWitness, Witness

MIB = 2**20


@dataclass(frozen=True)
class MigrateOutcome:
    result: MigrationResult
    check: CheckReport


def _quiet(*_args: object) -> None:
    return None


def link_bandwidth_mib_s(link_mbps: int) -> int:
    """QEMU's bandwidth cap (MiB/s, whole) for a link of ``link_mbps`` Mbit/s, rounded up."""
    return -(-link_mbps * 1_000_000 // 8 // MIB)


def migrate(
    vm: str,
    to: str,
    options: MigrationOptions,
    *,
    on_progress: ProgressFn = _quiet,
    note: NoteFn = _quiet,
) -> MigrateOutcome:
    """Run the pre-flight checks and, unless they block, the live migration.

    A blocked check still makes a job (status failed, the findings in its events), so
    `vmferry jobs` shows every attempt.
    """
    reconcile_vm(vm)
    note(f"checking {vm} -> {to}")
    report = check_migration(vm, to, copy_storage=options.copy_storage)
    store = open_store()
    source, destination = store.get_host(report.source), store.get_host(report.destination)
    job = store.create_job("migrate", vm, source.name, destination.name, options)
    store.set_owner(job.id, os.getpid(), start_ticks(os.getpid()) or 0)
    store.add_event(job.id, "checks", f"pre-flight: {len(report.findings)} findings, "
                    f"{'blocked' if report.blocked else 'clear'}",
                    {"findings": to_jsonable(list(report.findings))})  # fmt: skip
    if report.blocked:
        blockers = [f.id for f in report.findings if f.severity == "blocker"]
        result = MigrationResult(job.id, vm, source.name, destination.name, options.strategy,
                                 JobStatus.FAILED, "blocked by pre-flight checks: "
                                 + ", ".join(blockers), None, None, None, None)  # fmt: skip
        store.finish(job.id, result)
        return MigrateOutcome(result, report)

    lab = load_state()
    bandwidth = options.bandwidth_mib_s
    if bandwidth is None and lab is not None and destination.name in lab.registered_hosts:
        bandwidth = link_bandwidth_mib_s(lab.link_mbps)
    disks = report.facts.disks if report.facts is not None else ()
    request = MigrationRequest(
        vm=vm,
        destination_uri=destination.uri,
        migration_uri=destination.migration_uri,
        bandwidth_mib_s=bandwidth,
        allow_postcopy=options.strategy is Strategy.POSTCOPY,
        # vmferry checked that the destination resolves every shared disk itself
        unsafe=bool(disks) and all(d.reach is DiskReach.SHARED for d in disks if d.path)
        and not options.copy_storage,
        copy_disks=tuple(d.target for d in disks if d.reach is DiskReach.LOCAL)
        if options.copy_storage else (),
    )  # fmt: skip
    guest = lab.guests.get(vm) if lab is not None else None
    witness: Witness = LabWitness(guest) if guest is not None else NoWitness()
    plan = LivePlan(job.id, vm, source, destination, options, request)
    result = run_live_migration(plan, store, witness, on_progress=on_progress, note=note)
    if guest is not None and lab is not None and result.status is JobStatus.COMPLETED:
        lab.guests[vm].host = destination.name  # the lab's own bookkeeping follows the VM
        save_state(lab)
    return MigrateOutcome(result, report)
