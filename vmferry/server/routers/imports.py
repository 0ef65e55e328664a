"""`POST /imports`: a VMware/Hyper-V VM or a disk image on the server's machine becomes a
libvirt VM, as `vmferry import SOURCE --to HOST` (its disks copied and proved).

Paths: ``source`` and ``workdir`` name files on the server's machine, so they must lie,
with their symlinks and ``..`` resolved, inside a directory of the setting
``server.import_dirs`` (`vmferry settings set server.import_dirs /srv/imports:/data/ova`);
so must every disk and medium a ``.vmx`` names (OVF, OVA and VMDK descriptors are held to
their own directory by their parsers already). Otherwise ``403`` with the rule
``import.path``, and nothing is read or written; with the setting empty every import is
refused so.

An import copies whole disks (minutes), so it runs in a background thread of the server (with
PostgreSQL: it is queued for a `vmferry worker`, :func:`run_queued_import`) as a job of kind
``import`` (``202``, ``Location: /api/v1/jobs/{id}``): its notes and disk
progress are the job's events, and its last event (``import``) carries the
`vmferry import --json` document. ``dry_run`` changes nothing and answers at once (``200``
with that document). A cancel (``POST /jobs/{id}/cancel``) stops the import while it
copies a disk (what was written is removed); once the disks are copied it completes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from procrastinate.job_context import JobContext
from procrastinate.types import JSONValue

from vmferry.errors import VmferryError
from vmferry.imports.mapping import Choice, ImportOptions, parse_network_map
from vmferry.model.account import User
from vmferry.model.migration import JobStatus
from vmferry.model.source_vm import Firmware
from vmferry.server.actions import Services, is_inside, services_of, start_in_thread
from vmferry.server.auth import CurrentUser, names, require
from vmferry.server.context import Context
from vmferry.server.errors import Refused
from vmferry.server.moves import QueuedMoves
from vmferry.server.roles import Action
from vmferry.server.routers.jobs import job_json
from vmferry.server.schemas import ImportIn, JobOut, Problem, ValidationProblem
from vmferry.service.import_doc import outcome_json
from vmferry.service.import_job import end_import_job, make_import_job
from vmferry.service.import_vm import (
    ImportBlockedError,
    ImportCancelledError,
    ImportFailedError,
    ImportRequest,
)
from vmferry.service.lease import process_lease
from vmferry.service.settings import import_dirs
from vmferry.sources import ImageOverrides, Limits
from vmferry.sources.refusal import Refused as SourceRefused
from vmferry.sources.refusal import bad_input, read_descriptor
from vmferry.sources.vmx import decode_vmx, parse_vmx_text
from vmferry.store.db import Store

router = APIRouter(prefix="/imports", tags=["imports"])

TIB = 2**40
RULE = "import.path"
RUN_IMPORT = "vmferry.run_import"  # the workers' task (cli/worker_cmd.py registers it)
_VMX_FILE_KEY = re.compile(r"^((?:ide|scsi|sata|nvme)\d+:\d+|floppy\d+)\.filename$")
_NOT_FILES = frozenset({"cdrom-raw", "atapi-cdrom"})  # the host's drive, not a file


def _refuse(request: Request, reason: str) -> Refused:
    request.state.rule = RULE
    return Refused(RULE, reason)


def vmx_references(path: Path, limits: Limits) -> list[Path]:
    """The files a ``.vmx`` names for its disks and media (relative to its directory),
    read before any of them is opened; :class:`BadInputError` for a VMX that cannot be read."""
    try:
        entries = parse_vmx_text(decode_vmx(read_descriptor(path, limits.max_descriptor_bytes,
                                                            "VMX file"))).entries  # fmt: skip
    except SourceRefused as exc:
        raise bad_input(path, exc.reason) from None
    found = []
    for key, value in entries.items():
        match = _VMX_FILE_KEY.match(key)
        if match is None or not value.strip() or value.strip().lower() == "auto detect":
            continue
        device = match.group(1)
        if entries.get(f"{device}.present", "true").lower() == "false":
            continue
        if entries.get(f"{device}.devicetype", "").lower() in _NOT_FILES:
            continue
        found.append(path.parent / value)
    return found


def check_paths(request: Request, body: ImportIn, roots: tuple[Path, ...]) -> None:
    """Refuse (403, ``import.path``) a path of the body, or a file a VMX names, that does
    not lie inside ``roots`` once resolved."""
    if not roots:
        raise _refuse(
            request,
            "the API imports nothing until an admin names the directories "
            "it may read: `vmferry settings set server.import_dirs /srv/imports`",
        )
    shown = ":".join(str(r) for r in roots)
    for field, value in (("source", body.source), ("workdir", body.workdir)):
        if value is not None and not is_inside(Path(value), roots):
            raise _refuse(request, f"{field} {value} is not inside the import directories "
                          f"(server.import_dirs: {shown})")  # fmt: skip
    source = Path(body.source)
    if source.suffix.lower() == ".vmx" and source.is_file():
        for named in vmx_references(source, Limits()):
            if not is_inside(named, roots):
                raise _refuse(request, f"{source.name} names {named}, which is not inside the "
                              f"import directories (server.import_dirs: {shown})")  # fmt: skip


def _request(body: ImportIn) -> ImportRequest:
    """The request `vmferry import` builds from the same options."""
    try:
        mapping = parse_network_map(list(body.network_map))
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("body", "network_map"), "msg": str(exc),
                                       "type": "value_error"}]) from None  # fmt: skip
    source = Path(body.source)
    options = ImportOptions(body.name, mapping, body.storage_pool, body.disk_bus, body.nic_model,
                            Choice(body.convert_guest), body.console_log)  # fmt: skip
    overrides = ImageOverrides(name=body.name or source.stem, vcpus=body.vcpus,
                               memory_mb=body.memory_mb, firmware=Firmware(body.firmware),
                               guest_family=body.guest_family,
                               nic_macs=tuple(body.mac))  # fmt: skip
    return ImportRequest(source=source, to=body.to, options=options, overrides=overrides,
                         limits=Limits(max_virtual_bytes=int(body.max_virtual_size_tib * TIB)),
                         virt_type=body.virt_type, dry_run=body.dry_run, start=body.start,
                         workdir=None if body.workdir is None else Path(body.workdir))  # fmt: skip


@router.post(
    "", response_model=JobOut, status_code=202,
    responses={200: {"description": "a dry run: the `vmferry import --json` document",
                     "content": {"application/json": {"schema": {"type": "object"}}}},
               404: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem},
               422: {"model": ValidationProblem}, 502: {"model": Problem},
               504: {"model": Problem}},
    dependencies=[Depends(names(Action.IMPORT)), Depends(require(Action.IMPORT))],
)  # fmt: skip
def start_import(
    body: ImportIn, request: Request, response: Response, user: CurrentUser,
    context: Context, services: Annotated[Services, Depends(services_of)],
) -> Any:  # fmt: skip
    """Import the VM or image: 202 with the import's job (``Location``), or for a dry run
    200 with what the import would do."""
    request.state.target = body.source
    check_paths(request, body, import_dirs(context.store))
    import_request = _request(body)
    context.store.get_host(body.to)  # 404 before anything is written
    if body.dry_run:
        doc = outcome_json(
            services.import_vm(import_request, note=_quiet, on_disk_progress=_quiet_progress)
        )
        return JSONResponse(doc, status_code=200)  # fmt: skip
    name = body.name or Path(body.source).stem
    if isinstance(context.moves, QueuedMoves):  # PostgreSQL: a worker imports it
        job_id = _queue(body, import_request, name, user, context.store, context.moves)
        response.headers["Location"] = f"/api/v1/jobs/{job_id}"
        return JobOut(**job_json(context.store.get_job(job_id)))
    services.running.claim("import", name, f"an import of {name} is running in this server "
                           "already; see GET /api/v1/jobs")  # fmt: skip
    try:
        job_id = _start(import_request, name, user, context.store, services)
    except BaseException:
        services.running.release("import", name)  # nothing runs: free the name
        raise
    response.headers["Location"] = f"/api/v1/jobs/{job_id}"
    return JobOut(**job_json(context.store.get_job(job_id)))


def _quiet(_message: str) -> None:
    return None


def _quiet_progress(_index: int, _percent: float) -> None:
    return None


def _made(request: ImportRequest, name: str, user: User, store: Store) -> str:
    """The import's job, pending, owned by this server's lease (one unfinished job per VM
    name: a second is refused, 409)."""
    return make_import_job(store, request, name, by=user.name)


def _queue(body: ImportIn, request: ImportRequest, name: str, user: User, store: Store,
           moves: QueuedMoves) -> str:  # fmt: skip
    job_id = _made(request, name, user, store)
    try:
        moves.queue_task(RUN_IMPORT, job_id, {"body": _json(body.model_dump(mode="json"))})
    except Exception as exc:
        store.set_status(job_id, JobStatus.FAILED, f"could not be queued: {exc}")
        raise
    return job_id


def _json(value: dict[str, Any]) -> JSONValue:
    return value  # a JSON-mode dump is JSON


def run_queued_import(context: JobContext, job_id: str, body: dict[str, Any]) -> str:
    """The procrastinate task a `vmferry worker` runs for an import the server queued: the
    same import, events and end as in a server thread, owned by the worker's lease."""
    from vmferry.server.actions import default_services
    from vmferry.store.db import open_store

    with open_store() as store:
        job = store.get_job(job_id)
        if job.status.finished:
            return f"job {job_id} was {job.status} already"
        store.set_owner(job_id, process_lease(store))
        name = context.worker_name or "worker"
        store.add_event(job_id, "worker", f"taken by vmferry worker {name}",
                        {"worker": name, "task_id": context.job.id})  # fmt: skip
        if store.is_cancel_requested(job_id):
            store.set_status(job_id, JobStatus.CANCELLED, "cancelled before it started")
            return "cancelled before it started"
        store.set_status(job_id, JobStatus.RUNNING)
        _run(job_id, _request(ImportIn.model_validate(body)), store, default_services())
        return str(store.get_job(job_id).status)


def _start(request: ImportRequest, name: str, user: User, store: Store, services: Services) -> str:
    job_id = _made(request, name, user, store)
    job = store.get_job(job_id)

    def work(ready: Any) -> None:
        try:
            store.set_status(job.id, JobStatus.RUNNING)
            ready(job.id)
            _run(job.id, request, store, services)
        finally:
            services.running.release("import", name)

    return str(start_in_thread(f"vmferry-import-{name}", work, services.start_wait_s,
                               f"the import of {name}"))  # fmt: skip


def _run(job_id: str, request: ImportRequest, store: Store, services: Services) -> None:
    """The import in its thread; its end is always recorded in the job."""
    shown: dict[int, float] = {}

    def note(message: str) -> None:
        store.add_event(job_id, "note", message)

    def progress(index: int, percent: float) -> None:
        if percent < 100 and percent - shown.get(index, -100) < 5:
            return
        shown[index] = percent
        store.add_event(job_id, "progress", f"disk {index}: {percent:.0f}%",
                        {"disk": index, "percent": round(percent, 1)})  # fmt: skip
        if percent < 100 and store.is_cancel_requested(job_id):
            raise ImportCancelledError("cancelled through the API while copying a disk")

    try:
        outcome = services.import_vm(request, note=note, on_disk_progress=progress)
    except (ImportBlockedError, ImportFailedError) as exc:
        end_import_job(store, job_id, outcome_json(exc.outcome), JobStatus.FAILED,
                       exc.outcome.reason)  # fmt: skip
        return
    except ImportCancelledError as exc:  # what it made is removed
        store.set_status(job_id, JobStatus.CANCELLED, exc.message)
        return
    except VmferryError as exc:
        store.set_status(job_id, JobStatus.FAILED, exc.message.splitlines()[0])
        return
    except Exception as exc:  # recorded in the job, never lost with the thread
        store.set_status(job_id, JobStatus.FAILED, f"internal error: {type(exc).__name__}")
        raise
    end_import_job(store, job_id, outcome_json(outcome), JobStatus.COMPLETED)
