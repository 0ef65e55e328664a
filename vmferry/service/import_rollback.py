"""`vmferry rollback JOB` of an import job: the imported VM removed from its host.

The import's document (its job's last ``import`` event) names the domain, the host and the
volumes the import made. The domain is powered off and undefined there, then each volume
is removed. A vSphere source VM the import powered off (the document's ``source_stopped``)
is powered on again, after the domain is gone from KVM (never both running with the same
MACs); its source's password comes from the caller, asked for and tried (a login) before
anything is touched. Files are left as they are. Refused (exit 3, nothing touched) when the
domain runs on another host now (it was moved: move it back first) or when the domain of
that name there is not the import's (none of its disks is a volume the import made). Again
on a job rolled back already: nothing changes; one whose vSphere VM could not be powered on
is completed by running it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import delete_volume
from vmferry.drivers.vsphere import VsphereVmHandle, vsphere_session
from vmferry.errors import BadInputError, BlockedError, NotFoundError, VmferryError
from vmferry.model import VmState
from vmferry.model.migration import Job, JobStatus
from vmferry.service.import_job import import_document
from vmferry.service.locate import locate
from vmferry.service.rollback import PasswordFn, Rollback
from vmferry.service.vsphere_import import POWER_TASK_TIMEOUT_S
from vmferry.service.vsphere_sources import get_source
from vmferry.sources.vsphere_vm import parse_vsphere_vm_ref
from vmferry.store.db import Store

__all__ = ["roll_back_import"]

NoteFn = Callable[[str], None]


def roll_back_import(store: Store, job: Job, note: NoteFn,
                     vsphere_password: PasswordFn | None = None) -> Rollback:  # fmt: skip
    """Remove what import job ``job`` made (see the module docstring)."""
    doc = import_document(job)
    if job.status is not JobStatus.COMPLETED or doc is None or doc.get("status") != "completed":
        raise BadInputError(f"job {job.id}'s import did not complete ({job.status}): it left "
                            "nothing on the host to roll back")  # fmt: skip
    vm = str(doc["vm"])
    done = [e for e in job.events if e.kind == "rollback" and e.data.get("status") == "completed"]
    if done:
        return Rollback(job.id, vm, job.source, "already-rolled-back", None, "rolled back before")
    with contextlib.ExitStack() as stack:
        source_vm = None
        if doc.get("source_stopped") and job.source.startswith("vsphere://"):
            source_vm = _source_vm(store, job, stack, vsphere_password)
        removed, left = _remove_from_host(store, job, doc, note)
        message = (f"rolled back: {vm} and its {len(removed) + len(left)} volume(s) removed "
                   f"from {doc['destination']}" if not left
                   else f"rollback left {', '.join(left)} on {doc['destination']}")  # fmt: skip
        powered = None
        if source_vm is not None and not left:
            powered, said = _power_on(source_vm, note)
            message = f"{message}; {said}"
    ok = not left and powered is not False
    store.add_event(job.id, "rollback", message, {
        "status": "completed" if ok else "failed", "removed": removed, "left": left,
        "source_powered_on": powered, "job_id": None})  # fmt: skip
    note(message)
    return Rollback(job.id, vm, job.source, "rolled-back" if ok else "failed", None,
                    None if ok else message)  # fmt: skip


def _source_vm(store: Store, job: Job, stack: contextlib.ExitStack[bool | None],
               vsphere_password: PasswordFn | None) -> VsphereVmHandle:  # fmt: skip
    """The vSphere VM the import stopped, found through a session on its source (logged
    in before anything is touched: a wrong password changes nothing)."""
    source_name, vm_name = parse_vsphere_vm_ref(job.source)
    source = get_source(source_name, store)
    if vsphere_password is None:
        raise BadInputError(f"job {job.id} powered {vm_name} off on vSphere source "
                            f"{source_name}: rolling it back needs its password")  # fmt: skip
    session = stack.enter_context(vsphere_session(source, vsphere_password(source)))
    return session.find_vm(vm_name)


def _power_on(handle: VsphereVmHandle, note: NoteFn) -> tuple[bool, str]:
    """Power the source VM on again unless it runs already; (done, what to say)."""
    name = handle.name
    if handle.power_state() == "poweredOn":
        return True, f"{name} runs on vSphere already"
    note(f"powering {name} on again on vSphere")
    try:
        handle.power_on(POWER_TASK_TIMEOUT_S)
    except VmferryError as exc:
        return False, f"{name} could NOT be powered on again on vSphere: {exc.message}"
    return True, f"{name} powered on again on vSphere"


def _remove_from_host(store: Store, job: Job, doc: dict[str, Any],
                      note: NoteFn) -> tuple[list[str], list[str]]:  # fmt: skip
    """Power off and undefine the imported domain on its host and remove its volumes;
    (removed, left). Refused (BlockedError, nothing touched) as the module says."""
    vm, host_name = str(doc["vm"]), str(doc["destination"])
    volumes = [str(v) for v in doc.get("volumes") or []]
    host = store.get_host(host_name)
    with LibvirtHost.connect(host.name, host.uri) as conn:
        try:
            record = conn.get_vm(vm)
        except NotFoundError:
            record = None
        if record is None:
            elsewhere = _where(vm)
            if elsewhere is not None and elsewhere != host.name:
                raise BlockedError(f"{vm} runs on {elsewhere} now, not on {host.name} where "
                                   f"job {job.id} imported it: move it back first")  # fmt: skip
        else:
            disks = {conn.disk_path(d) for d in record.spec.disks}
            if volumes and not disks & set(volumes):
                raise BlockedError(f"the domain {vm} on {host.name} is not the one job {job.id} "
                                   "imported (none of its disks is a volume the import made); "
                                   "nothing was touched")  # fmt: skip
            if record.state in (VmState.RUNNING, VmState.PAUSED):
                conn.destroy(vm)
                note(f"{vm} powered off on {host.name}")
            conn.undefine(vm)
            note(f"{vm} undefined on {host.name}")
        left = []
        for path in volumes:
            try:
                delete_volume(conn, path)
                note(f"removed {path}")
            except VmferryError as exc:
                left.append(path)
                note(f"{path} is left: {exc.message}")
    return [v for v in volumes if v not in left], left


def _where(vm: str) -> str | None:
    """The registered host that has ``vm`` now, or None."""
    try:
        return locate(vm).host.name
    except VmferryError:
        return None
