"""`vmferry rehearse VM --to HOST`: a throw-away copy of a running VM booted on the
destination in an isolated network, checked, timed, then removed (docs/storage.md).

The data flow, each phase timed (``phases_ms``):

1. ``backup``: the VM's disks backed up while it runs (:func:`vmferry.service.backup.back_up`)
   into a pool both hosts see (``--pool``, default: the pool that holds its disks), the only
   thing a rehearsal does to the VM.
2. ``overlay``: on the destination, one qcow2 overlay per backup (the copy writes there).
3. ``network``: the isolated network ``vmferry-rehearsal`` (no forward, no address) made
   on the destination when it has none.
4. ``boot``: the copy (:func:`vmferry.rehearsal.domain.rehearsal_xml`: another name, the
   overlays, its NICs on the isolated network) started as a transient domain, until it runs
   and, when the VM has a guest agent channel, the agent answers.
   ``verify``: the VM's health command (`vmferry vm set VM --health-command`), when it
   declares one, run in the copy through its agent as after a move; it must exit 0. The
   VM's network probes are not run (the copy has no route to them, and by its address
   they would reach the VM itself): ``verification`` names them as skipped.
5. ``cleanup``: the copy stopped (being transient, it is gone), the overlays and backups
   deleted, the network removed if the rehearsal made it. What could not be removed is
   named in ``left_behind``.

Ctrl-C or an error at any phase still runs the clean-up. Each thing made is recorded in a
``rehearsal`` event first, so that a rehearsal whose vmferry died is cleaned up by `vmferry
job resume` (:func:`reconcile_rehearsal`).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vmferry.drivers.guest_agent import agent, run_in_guest
from vmferry.drivers.libvirt_blockcopy import create_volume
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import delete_volume
from vmferry.drivers.libvirt_rehearsal import (
    destroy_copy,
    ensure_isolated_network,
    remove_network,
    start_copy,
)
from vmferry.errors import BadInputError, VmferryError
from vmferry.model import Host, VmState
from vmferry.model.migration import Job, JobStatus, MigrationOptions, MigrationResult, Strategy
from vmferry.rehearsal.domain import REHEARSAL_NETWORK, rehearsal_name, rehearsal_xml
from vmferry.service.backup import back_up, remove_backup
from vmferry.service.lease import process_lease
from vmferry.service.locate import locate
from vmferry.store import backups as backup_store
from vmferry.store.db import Store, open_store

__all__ = ["Rehearsal", "reconcile_rehearsal", "rehearse"]

NoteFn = Callable[[str], None]
AGENT_CHANNEL = "org.qemu.guest_agent.0"
HEALTH_TIMEOUT_S = 30.0


def _quiet(*_args: object) -> None:
    return None


@dataclass(frozen=True)
class Rehearsal:
    """The `vmferry rehearse --json` document."""

    job_id: str
    vm: str
    destination: str
    status: str  # completed | failed
    reason: str | None
    phases_ms: dict[str, int]
    verification: dict[str, object]
    left_behind: list[str] = field(default_factory=list)


@dataclass
class _Made:
    """What the rehearsal made, to remove (in this order) at the end."""

    copy: str | None = None
    overlays: list[str] = field(default_factory=list)
    network: bool = False


def rehearse(vm: str, to: str, *, pool: str | None = None, boot_timeout_s: float = 300.0,
             note: NoteFn = _quiet, store: Store | None = None) -> Rehearsal:  # fmt: skip
    """Rehearse moving ``vm`` to ``to`` (see the module docstring)."""
    store = store or open_store()
    found = locate(vm)
    source, record = found.host, found.record
    if record.state is not VmState.RUNNING:
        raise BadInputError(f"{vm} is {record.state} on {source.name}; a rehearsal copies a "
                            "running VM")  # fmt: skip
    destination = store.get_host(to)
    if destination.name == source.name:
        raise BadInputError(f"{vm} runs on {to} already; rehearse a move to another host")
    pools = {d.pool for d in record.spec.disks if d.pool}
    pool = pool or (pools.pop() if len(pools) == 1 else None)
    if pool is None:
        raise BadInputError(f"give --pool: a storage pool {source.name} and {to} both see "
                            f"({vm}'s disks are in {len(pools) or 'no'} pools)")  # fmt: skip
    with LibvirtHost.connect(destination.name, destination.uri) as dst:
        if pool not in dst.pools():
            raise BadInputError(f"{to} has no pool {pool}; the backup made on {source.name} "
                                "must be read there (--pool: a pool both hosts see)")  # fmt: skip
    job = store.create_job("rehearse", vm, source.name, destination.name, MigrationOptions())
    store.set_owner(job.id, process_lease(store))
    store.set_status(job.id, JobStatus.RUNNING)
    phases: dict[str, int] = {}
    made = _Made()
    verification: dict[str, object] = {}
    reason: str | None = None
    interrupted: str | None = None
    started = time.monotonic()

    def lap(phase: str, since: float) -> float:
        now = time.monotonic()
        phases[phase] = round((now - since) * 1000)
        return now

    try:
        with LibvirtHost.connect(source.name, source.uri) as src:
            vm_xml = src.domain_xml(vm)
        at = time.monotonic()
        backups = back_up(store, job.id, vm, source, pool, note=note)
        at = lap("backup", at)
        with LibvirtHost.connect(destination.name, destination.uri) as dst:
            overlays: dict[str, str] = {}
            for b in backups:
                path = create_volume(dst, pool, f"{rehearsal_name(vm, job.id)}-{b.target}.qcow2",
                                     b.capacity_bytes, "qcow2", backing=b.path)  # fmt: skip
                made.overlays.append(path)
                _made(store, job.id, "overlay", path)
                overlays[b.target] = path
            at = lap("overlay", at)
            made.network = ensure_isolated_network(dst, REHEARSAL_NETWORK)
            if made.network:
                _made(store, job.id, "network", REHEARSAL_NETWORK)
            at = lap("network", at)
            copy = rehearsal_name(vm, job.id)
            _made(store, job.id, "copy", copy)
            made.copy = copy
            start_copy(dst, rehearsal_xml(vm_xml, copy, overlays))
            note(f"{copy} started on {to} in the isolated network {REHEARSAL_NETWORK}")
            verification = _boot(dst, copy, AGENT_CHANNEL in vm_xml, boot_timeout_s)
            at = lap("boot", at)
            declared = store.vm_probes(vm)
            if declared.probes:
                verification["probes_skipped"] = list(declared.probes)
            if declared.health and verification["agent"] is True:
                verification["health"] = _health(dst, copy, declared.health)
                lap("verify", at)
            elif declared.health and verification["agent"] is None:
                verification["health"] = {"command": shlex.join(declared.health), "exit": None,
                                          "ok": None, "why": "the VM has no guest agent "
                                          "channel to run it through"}  # fmt: skip
        if not verification["running"] or verification["agent"] is False:
            reason = f"the copy did not {'answer' if verification['running'] else 'run'} " \
                     f"on {to} within {boot_timeout_s:g} s"  # fmt: skip
        elif isinstance(health := verification.get("health"), dict) and not health["ok"]:
            code = health["exit"]
            reason = (f"the copy's health command {health['command']} "
                      + ("did not end in time" if code is None else f"exited {code}"))  # fmt: skip
    except VmferryError as exc:
        reason = exc.message
    except KeyboardInterrupt:
        reason = interrupted = "interrupted (Ctrl-C)"
    finally:
        at = time.monotonic()
        left = _clean(store, job.id, destination, made, note)
        phases["cleanup"] = round((time.monotonic() - at) * 1000)
    status = JobStatus.COMPLETED if reason is None else JobStatus.FAILED
    total = round((time.monotonic() - started) * 1000)
    store.add_event(job.id, "rehearsal", f"rehearsal {status}: " + ", ".join(
        f"{k} {v} ms" for k, v in phases.items()), {"phases_ms": phases,
                                                    "verification": verification,
                                                    "left_behind": left})  # fmt: skip
    store.finish(job.id, MigrationResult(job.id, vm, source.name, destination.name,
                                         Strategy.COLD, status, reason, total, None, None,
                                         None))  # fmt: skip
    if interrupted:
        raise KeyboardInterrupt
    return Rehearsal(job.id, vm, destination.name, str(status), reason, phases, verification,
                     left)  # fmt: skip


def _made(store: Store, job_id: str, kind: str, name: str) -> None:
    store.add_event(job_id, "rehearsal", f"made {kind} {name}", {"made": kind, "name": name})


def _boot(dst: LibvirtHost, copy: str, has_agent: bool, timeout_s: float) -> dict[str, object]:
    """Wait until the copy runs and (with an agent channel) its agent answers."""
    started = time.monotonic()
    running, answered = False, None if not has_agent else False
    while time.monotonic() - started < timeout_s:
        running = any(r.spec.name == copy and r.state is VmState.RUNNING
                      for r in dst.list_vms())  # fmt: skip
        if running and not has_agent:
            break
        if running:
            try:
                agent(dst, copy, "guest-ping", timeout_s=2)
                answered = True
                break
            except VmferryError:
                pass
        time.sleep(1.0)
    return {"running": running, "agent": answered,
            "ready_ms": round((time.monotonic() - started) * 1000)}  # fmt: skip


def _health(dst: LibvirtHost, copy: str, argv: Sequence[str]) -> dict[str, object]:
    """The VM's health command run in the copy: its exit code (None: it did not end)."""
    try:
        code = run_in_guest(dst, copy, argv, timeout_s=HEALTH_TIMEOUT_S)
    except VmferryError as exc:
        return {"command": shlex.join(argv), "exit": None, "ok": False, "error": exc.message}
    return {"command": shlex.join(argv), "exit": code, "ok": code == 0}


def _clean(store: Store, job_id: str, destination: Host, made: _Made, note: NoteFn) -> list[str]:
    """Remove what the rehearsal made; what could not be removed, one line each."""
    left: list[str] = []
    with LibvirtHost.connect(destination.name, destination.uri) as dst:
        if made.copy is not None:
            try:
                destroy_copy(dst, made.copy)
            except VmferryError as exc:
                left.append(f"domain {made.copy}: {exc.message}")
        for path in made.overlays:
            try:
                delete_volume(dst, path)
            except VmferryError as exc:
                left.append(f"overlay {path}: {exc.message}")
        if made.network:
            try:
                remove_network(dst, REHEARSAL_NETWORK)
            except VmferryError as exc:
                left.append(f"network {REHEARSAL_NETWORK}: {exc.message}")
    for backup in backup_store.backups_of_job(store, job_id):
        if backup.removed_at is None:
            try:
                remove_backup(store, backup, store.get_host(backup.host))
            except VmferryError as exc:
                left.append(f"backup {backup.path}: {exc.message}")
    note("removed the copy, its overlays and backups" if not left
         else f"could not remove: {'; '.join(left)}")  # fmt: skip
    return left


def reconcile_rehearsal(store: Store, job: Job) -> Job:
    """A rehearsal whose vmferry died: remove what its events say it made, end the job."""
    made = _Made()
    for event in job.events:
        if event.kind == "rehearsal" and "made" in event.data:
            name = str(event.data["name"])
            if event.data["made"] == "copy":
                made.copy = name
            elif event.data["made"] == "overlay":
                made.overlays.append(name)
            elif event.data["made"] == "network":
                made.network = True
    left = _clean(store, job.id, store.get_host(job.destination), made, _quiet)
    why = "vmferry ended during the rehearsal; removed what it made" + (
        f", except: {'; '.join(left)}" if left else "")  # fmt: skip
    store.finish(job.id, MigrationResult(job.id, job.vm, job.source, job.destination,
                                         Strategy.COLD, JobStatus.FAILED, why, None, None, None,
                                         None))  # fmt: skip
    return store.get_job(job.id)


def rehearsed_boots(store: Store, *, limit: int = 1000) -> dict[str, int]:
    """Per VM, how long its copy took to boot in its latest completed rehearsal (among the
    newest ``limit`` jobs): what a cold move of it stops it for at least."""
    boots: dict[str, int] = {}
    for job in store.list_jobs(limit=limit):  # newest first: the first found per VM wins
        if job.kind != "rehearse" or job.vm in boots or job.status is not JobStatus.COMPLETED:
            continue
        for event in reversed(store.get_job(job.id).events):
            phases = event.data.get("phases_ms") if event.kind == "rehearsal" else None
            if isinstance(phases, dict) and isinstance(phases.get("boot"), int):
                boots[job.vm] = int(phases["boot"])
                break
    return boots
