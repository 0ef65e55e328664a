"""`vmferry import`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from vmferry.cli.output import console, err_console, print_json, progress_printer
from vmferry.client.remote import remote_api
from vmferry.errors import (
    BadInputError,
    BlockedError,
    MigrationFailedError,
    NoRemoteFormError,
    StoppedFollowingError,
)
from vmferry.imports.mapping import DISK_BUSES, NIC_MODELS, Choice, ImportOptions
from vmferry.imports.mapping import parse_network_map as _parse_map
from vmferry.model.migration import JobStatus
from vmferry.model.source_vm import Firmware
from vmferry.model.vsphere import VsphereVmRef
from vmferry.service.import_doc import outcome_json
from vmferry.service.import_job import ImportJobRun
from vmferry.service.import_vm import (
    ImportBlockedError,
    ImportFailedError,
    ImportOutcome,
    ImportRequest,
)
from vmferry.service.warm_cutover import parse_cutover_at
from vmferry.sources import ImageOverrides, Limits

if TYPE_CHECKING:
    from vmferry.client.api import ApiClient

TIB = 2**40


def _findings_table(doc: dict[str, Any]) -> Table:
    table = Table(title="findings", show_lines=False)
    for col in ("severity", "id", "message", "remediation"):
        table.add_column(col)
    style = {"blocker": "bold red", "warning": "yellow", "info": "dim"}
    for f in doc["findings"]:
        sev = str(f["severity"])
        table.add_row(f"[{style[sev]}]{sev}[/]", f["id"], f["message"], f["remediation"])
    return table


def _print_human(doc: dict[str, Any], pool: str, show_xml: bool) -> None:
    """The import's outcome (its `--json` document: the local outcome's, or the server's)
    as a table; ``pool`` is the destination storage pool."""
    if doc["findings"]:
        console.print(_findings_table(doc))
    if show_xml:
        console.print(Syntax(doc["domain_xml"], "xml", theme="ansi_dark", word_wrap=True))
    table = Table(show_header=False, box=None)
    table.add_row("vm", doc["vm"])
    table.add_row("destination", f"{doc['destination']} (pool {pool})")
    table.add_row("status", doc["status"] + (f": {doc['reason']}" if doc["reason"] else ""))
    for d in doc["disks"]:
        check = {True: "content identical", False: "DIFFERS", None: "converted by virt-v2v"}
        table.add_row(
            d["volume"],
            f"{d['bytes_written'] / 2**20:.1f} MiB written, {check[d['checksum_match']]}",
        )
    if doc["started"]:
        table.add_row("started", "yes")
    live = doc.get("live")
    if live:
        table.add_row("live import", (
            f"running on KVM {live['downtime_ms'] / 1000:.1f} s after the stop began; "
            f"{live['bytes_compared'] / 2**20:.1f} MiB proved equal to the datastore's, "
            f"{live['bytes_guest_written'] / 2**20:.1f} MiB written by the guest; "
            f"stream started again {live['resumes']} times"))  # fmt: skip
    for check in doc.get("addresses") or ():
        kept = {True: "kept", False: "NOT kept", None: "not checked (no guest agent answer)"}
        table.add_row(f"addresses {check['mac']}",
                      f"{kept[check['kept']]}: {', '.join(check['expected'])}")  # fmt: skip
    console.print(table)


def _options(
    name: str | None,
    network_map: list[str],
    storage_pool: str,
    disk_bus: str,
    nic_model: str,
    convert_guest: str,
    console_log: str | None,
) -> ImportOptions:
    if disk_bus not in DISK_BUSES:
        raise BadInputError(f"--disk-bus {disk_bus!r}: expected one of {', '.join(DISK_BUSES)}")
    if nic_model not in NIC_MODELS:
        raise BadInputError(f"--nic-model {nic_model!r}: expected one of {', '.join(NIC_MODELS)}")
    try:
        choice = Choice(convert_guest)
        mapping = _parse_map(network_map)
    except ValueError as exc:
        raise BadInputError(str(exc).replace("'Choice'", "--convert-guest")) from exc
    if console_log is not None and not console_log.startswith("/"):
        raise BadInputError(f"--console-log {console_log!r} must be an absolute path on the host")
    return ImportOptions(name, mapping, storage_pool, disk_bus, nic_model, choice, console_log)


def import_command(
    source_arg: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="A .vmx, .ovf, .ova, .vhdx/.vhd, .vmdk, .qcow2 or raw image, or "
            "vsphere://SOURCE/VM (a VM of a registered vSphere source, read from its "
            "datastore: docs/vsphere.md). In remote mode (VMFERRY_URL) an absolute path on "
            "the server's machine, inside its server.import_dirs: nothing is sent from here.",
        ),
    ],
    to: Annotated[str, typer.Option("--to", help="Registered destination host.")],
    name: Annotated[str | None, typer.Option(help="Name of the new VM.")] = None,
    network_map: Annotated[
        list[str] | None,
        typer.Option(
            "--network-map", help="SOURCE=DESTINATION network; repeatable; '*=net' maps all."
        ),
    ] = None,
    storage_pool: Annotated[str, typer.Option(help="Destination storage pool.")] = "default",
    storage_map: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-map",
            help="vSphere: DATASTORE=POOL; repeatable; '*=pool' maps all. With it, a disk "
            "on a datastore it does not name blocks the import.",
        ),
    ] = None,
    disk_bus: Annotated[str, typer.Option(help="virtio|sata|auto")] = "auto",
    nic_model: Annotated[str, typer.Option(help="virtio|e1000e|auto")] = "auto",
    convert_guest: Annotated[str, typer.Option(help="auto|always|never: run virt-v2v.")] = "auto",
    console_log: Annotated[
        str | None,
        typer.Option(help="Write the guest's serial console to this file on the destination."),
    ] = None,
    start: Annotated[bool, typer.Option(help="Start the VM once defined.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print findings and XML; change nothing.")] = False,
    virt_type: Annotated[str, typer.Option(help="kvm|qemu|auto (kvm when offered).")] = "auto",
    max_virtual_size_tib: Annotated[
        float, typer.Option(help="Refuse disks declaring more than this.")
    ] = 16,
    vcpus: Annotated[int, typer.Option(help="For a bare image: vCPUs.")] = 2,
    memory_mb: Annotated[int, typer.Option(help="For a bare image: memory.")] = 2048,
    firmware: Annotated[str, typer.Option(help="For a bare image: bios|efi.")] = "bios",
    guest_family: Annotated[
        str, typer.Option(help="For a bare image: linux|windows|other|unknown (picks the buses).")
    ] = "unknown",
    mac: Annotated[
        list[str] | None, typer.Option(help="For a bare image: a NIC with this MAC; repeatable.")
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Private temporary directory's parent (OVA disks, virt-v2v output); in "
            "remote mode a path on the server's machine."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="vSphere: power the VM off when VMware Tools cannot shut it down."),
    ] = False,
    rollback: Annotated[
        bool, typer.Option(help="vSphere: power the VM on again if the import fails.")
    ] = False,
    connections: Annotated[
        int, typer.Option(help="vSphere: parallel range requests per disk.")
    ] = 4,
    strategy: Annotated[
        str,
        typer.Option(
            help="vSphere: cold (stop the VM, then read its disks), warm (read them while "
            "it runs, then only what changed, until the cutover) or live-import (stop it, "
            "run it on KVM at once while its disks stream in; implies --start)."
        ),
    ] = "cold",
    serve_address: Annotated[
        str | None,
        typer.Option(
            help="vSphere live-import: this machine's address the host reads the datastore "
            "disks from (nbdkit listens there); default: the one on the route to the host."
        ),
    ] = None,
    bandwidth: Annotated[
        int,
        typer.Option(
            help="vSphere: MiB/s the import reads from the datastore at most, all its disks "
            "together (a live import's streams share it); 0: no cap."
        ),
    ] = 0,
    precopy_interval: Annotated[
        float, typer.Option(help="vSphere warm: seconds between copies of the changes.")
    ] = 3600.0,
    cutover_at: Annotated[
        str | None,
        typer.Option(
            help="vSphere warm: cut over at this ISO time (local unless it names a zone); "
            "else at `vmferry job cutover JOB`."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Import a VMware/Hyper-V VM or a disk image into a libvirt host, disks verified.

    In remote mode (VMFERRY_URL) the server imports it: SOURCE and --workdir are paths on
    the server's machine (inside its server.import_dirs), not this one's."""
    options = _options(
        name, network_map or [], storage_pool, disk_bus, nic_model, convert_guest, console_log
    )
    if virt_type not in ("kvm", "qemu", "auto"):
        raise BadInputError(f"--virt-type {virt_type!r}: expected kvm, qemu or auto")
    if guest_family not in ("linux", "windows", "other", "unknown"):
        raise BadInputError(
            f"--guest-family {guest_family!r}: expected linux, windows, other or unknown"
        )
    if firmware not in ("bios", "efi"):
        raise BadInputError(f"--firmware {firmware!r}: expected bios or efi")
    if max_virtual_size_tib <= 0 or vcpus < 1 or memory_mb < 16:
        raise BadInputError("--max-virtual-size-tib, --vcpus and --memory-mb must be positive")
    source: Path | VsphereVmRef
    at = None
    if storage_map:
        if not source_arg.startswith("vsphere://"):
            raise BadInputError("--storage-map is for vsphere:// sources (datastores to pools); "
                                "a file's disks go to --storage-pool")  # fmt: skip
        try:
            options = replace(options, storage_map=_parse_map(storage_map, "--storage-map"))
        except ValueError as exc:
            raise BadInputError(str(exc)) from exc
    if source_arg.startswith("vsphere://"):
        if strategy not in ("cold", "warm", "live-import"):
            raise BadInputError(f"--strategy {strategy!r}: expected cold, warm or live-import")
        if precopy_interval <= 0:
            raise BadInputError(f"--precopy-interval {precopy_interval:g}: expected > 0 s")
        if strategy != "warm" and cutover_at is not None:
            raise BadInputError("--cutover-at is for --strategy warm")
        live = strategy == "live-import"
        if not live and serve_address is not None:
            raise BadInputError("--serve-address is for --strategy live-import")
        if bandwidth < 0:
            raise BadInputError(f"--bandwidth {bandwidth}: expected >= 0 MiB/s")
        start = start or live
        at = None if cutover_at is None else parse_cutover_at(cutover_at)
        source = replace(_vsphere_ref(source_arg, force, rollback, connections),
                         strategy=strategy, precopy_interval_s=precopy_interval,
                         serve_address=serve_address, bandwidth_mib_s=bandwidth)  # fmt: skip
        stem = source.vm
    else:
        if (force or rollback or connections != 4 or strategy != "cold"
                or precopy_interval != 3600.0 or cutover_at is not None
                or serve_address is not None or bandwidth != 0):  # fmt: skip
            raise BadInputError("--force, --rollback, --connections, --strategy, "
                                "--precopy-interval, --cutover-at, --serve-address and "
                                "--bandwidth are for vsphere:// sources")  # fmt: skip
        source = Path(source_arg)
        stem = source.stem
    overrides = ImageOverrides(
        name=name or stem,
        vcpus=vcpus,
        memory_mb=memory_mb,
        firmware=Firmware(firmware),
        guest_family=guest_family,
        nic_macs=tuple(mac or ()),
    )
    request = ImportRequest(
        source=source,
        to=to,
        options=options,
        overrides=overrides,
        limits=Limits(max_virtual_bytes=int(max_virtual_size_tib * TIB)),
        virt_type=virt_type,
        dry_run=dry_run,
        start=start,
        workdir=workdir,
    )
    api = remote_api()
    if api is not None and isinstance(source, VsphereVmRef):
        api.close()
        raise NoRemoteFormError("import vsphere:// has no remote form yet: unset VMFERRY_URL")
    if api is not None:
        assert isinstance(source, Path)
        for what, path in (("SOURCE", source), ("--workdir", workdir)):
            if path is not None and not path.is_absolute():
                api.close()
                raise BadInputError(f"{what} {path}: in remote mode it is a path on the "
                                    "server's machine; give it absolute (inside the "
                                    "server's server.import_dirs)")  # fmt: skip
        body: dict[str, object] = {
            "source": str(source), "to": to, "name": name, "network_map": network_map or [],
            "storage_pool": storage_pool, "disk_bus": disk_bus, "nic_model": nic_model,
            "convert_guest": convert_guest, "console_log": console_log, "start": start,
            "dry_run": dry_run, "virt_type": virt_type,
            "max_virtual_size_tib": max_virtual_size_tib, "vcpus": vcpus,
            "memory_mb": memory_mb, "firmware": firmware, "guest_family": guest_family,
            "mac": mac or [], "workdir": None if workdir is None else str(workdir),
        }  # fmt: skip
        with api:
            import_remote(api, body, json_out)
        return
    note = progress_printer(True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
    )
    progress = Progress(*columns, console=err_console, transient=True)
    tasks: dict[int, TaskID] = {}

    def on_disk(index: int, percent: float) -> None:
        if not tasks:
            progress.start()  # only once a disk is copied: no bar (and no blank line) before
        if index not in tasks:
            tasks[index] = progress.add_task(f"disk {index}", total=100)
        progress.update(tasks[index], completed=percent)

    run = ImportJobRun(request, at)
    try:
        outcome = run.run(note, on_disk)
    except (ImportBlockedError, ImportFailedError) as exc:
        _stop(progress, tasks)
        _report(exc.outcome, json_out, show_xml=False, job_id=run.job_id)
        raise
    finally:
        _stop(progress, tasks)
    _report(outcome, json_out, show_xml=dry_run, job_id=run.job_id)


def _vsphere_ref(text: str, force: bool, rollback: bool, connections: int) -> VsphereVmRef:
    """``vsphere://SOURCE/VM`` with its source's password (environment, else a prompt)."""
    from vmferry.cli.sources_cmd import password_for
    from vmferry.service.vsphere_sources import get_source
    from vmferry.sources.vsphere_vm import parse_vsphere_vm_ref

    source_name, vm = parse_vsphere_vm_ref(text)
    if not 1 <= connections <= 32:
        raise BadInputError(f"--connections {connections}: expected 1 to 32")
    password = password_for(get_source(source_name))
    return VsphereVmRef(source_name, vm, password, force=force, rollback=rollback,
                        connections=connections)  # fmt: skip


def _stop(progress: Progress, tasks: dict[int, TaskID]) -> None:
    if tasks:
        progress.stop()


def _report(outcome: ImportOutcome, json_out: bool, *, show_xml: bool,
            job_id: str | None = None) -> None:  # fmt: skip
    doc = outcome_json(outcome)
    if job_id is not None:
        doc["job_id"] = job_id
    _report_doc(doc, outcome.plan.pool, json_out, show_xml=show_xml)


def _report_doc(doc: dict[str, Any], pool: str, json_out: bool, *, show_xml: bool) -> None:
    if json_out:
        print_json(doc)
    else:
        _print_human(doc, pool, show_xml)


# -- remote mode ----------------------------------------------------------------------------


def import_remote(api: ApiClient, body: dict[str, object], json_out: bool) -> None:
    """Import through the server (``POST /imports``): a dry run's document at once, else
    the import's job followed to its end (each event a progress line) and its last
    ``import`` event's document printed, with the local command's exit code (3 blocked, 4
    failed or cancelled). The first Ctrl-C asks the server to cancel the job (it stops
    while a disk is copied), a second stops following (exit 130)."""
    from vmferry.client.api import JobFollower

    note = progress_printer(True)
    pool = str(body["storage_pool"])
    started = api.start_import(body)
    if isinstance(started, dict):  # a dry run
        _report_doc(started, pool, json_out, show_xml=True)
        return
    note(f"job {started.id} in the vmferry server at {api.url}")
    follower = JobFollower(api, started.id, on_event=lambda event: note(event.message))
    cancelled = False
    while True:
        try:
            job = follower.run()
            break
        except KeyboardInterrupt:
            if cancelled:
                raise StoppedFollowingError(
                    f"stopped following job {started.id}: the server finishes its cancel; "
                    f"`vmferry job show {started.id}`"
                ) from None
            note(f"Ctrl-C: asking the server to cancel job {started.id}; Ctrl-C again stops "
                 "waiting for it")  # fmt: skip
            api.cancel_job(started.id)
            cancelled = True
    docs: list[dict[str, Any]] = [
        dict(e.data) for e in follower.events if e.kind == "import" and "status" in e.data
    ]
    if docs:
        _report_doc({**docs[-1], "job_id": started.id}, pool, json_out, show_xml=False)
    name = docs[-1]["vm"] if docs else job.vm
    if job.status is JobStatus.COMPLETED:
        return
    if docs and any(f["severity"] == "blocker" for f in docs[-1]["findings"]):  # as locally
        raise BlockedError(f"import of {name} {docs[-1]['reason']}")
    if not docs and job.status is JobStatus.FAILED:  # it failed before it had an outcome
        raise BadInputError(job.reason or f"import of {name} failed")
    raise MigrationFailedError(f"import of {name} {job.status}: {job.reason}")
