"""`vmferry rollback JOB` of an import job: the imported VM removed from its host.

The import's document (its job's last ``import`` event) names the domain, the host and the
volumes the import made. The domain is powered off and undefined there, then each volume
is removed; the source (files, or a vSphere VM) is left as the import left it. Refused
(exit 3, nothing touched) when the domain runs on another host now (it was moved: move it
back first) or when the domain of that name there is not the import's (none of its disks
is a volume the import made). Again on a job rolled back already: nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import delete_volume
from vmferry.errors import BadInputError, BlockedError, NotFoundError, VmferryError
from vmferry.model import VmState
from vmferry.model.migration import Job, JobStatus
from vmferry.service.import_job import import_document
from vmferry.service.locate import locate
from vmferry.service.rollback import Rollback
from vmferry.store.db import Store

__all__ = ["roll_back_import"]

NoteFn = Callable[[str], None]


def roll_back_import(store: Store, job: Job, note: NoteFn) -> Rollback:
    """Remove what import job ``job`` made (see the module docstring)."""
    doc = import_document(job)
    if job.status is not JobStatus.COMPLETED or doc is None or doc.get("status") != "completed":
        raise BadInputError(f"job {job.id}'s import did not complete ({job.status}): it left "
                            "nothing on the host to roll back")  # fmt: skip
    vm, host_name = str(doc["vm"]), str(doc["destination"])
    volumes = [str(v) for v in doc.get("volumes") or []]
    done = [e for e in job.events if e.kind == "rollback" and e.data.get("status") == "completed"]
    if done:
        return Rollback(job.id, vm, job.source, "already-rolled-back", None, "rolled back before")
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
    ok = not left
    message = (f"rolled back: {vm} and its {len(volumes)} volume(s) removed from {host.name}"
               if ok else f"rollback left {', '.join(left)} on {host.name}")  # fmt: skip
    store.add_event(job.id, "rollback", message, {
        "status": "completed" if ok else "failed", "removed": [v for v in volumes
                                                               if v not in left],
        "left": left, "job_id": None})  # fmt: skip
    note(message)
    return Rollback(job.id, vm, job.source, "rolled-back" if ok else "failed", None,
                    None if ok else message)  # fmt: skip


def _where(vm: str) -> str | None:
    """The registered host that has ``vm`` now, or None."""
    try:
        return locate(vm).host.name
    except VmferryError:
        return None
