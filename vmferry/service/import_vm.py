"""`vmferry import`: a VMware/Hyper-V VM or a disk image becomes a libvirt VM, disks verified.

The order, and what each step leaves behind when it fails or is interrupted:

1. Parse the source and check every disk header (``vmferry.sources``): bad input ends here
   with exit 2 and nothing written (an OVA's disks were copied only into a private
   temporary directory, which is removed).
2. Read the destination (networks, pools, domains, KVM, OVMF) and decide the mapping and
   the findings (pure, ``vmferry.imports``). ``--dry-run`` stops here and changes nothing.
   A blocker stops here too (exit 3).
3. If the guest needs it, convert it with virt-v2v into the temporary directory.
4. Copy each disk into the destination pool under a temporary name: the source is read
   once through qemu-nbd (format stated, under resource limits) and digested as it is
   read, the clusters that are not zeros are written into a new qcow2; then the copy is
   read back through QEMU and digested, and the two digests must be equal
   (``vmferry.drivers.verified_copy``).
5. Only then: rename the volumes to their final names, check that the host sees them, and
   define the domain (and start it with ``--start``). If defining fails, the volumes are
   removed again.

A source is a file (step 1 here) or a VM of a vSphere source (``VsphereVmRef``: step 1 and
the disks' reading in :mod:`vmferry.service.vsphere_import`, which stops the VM between
steps 2 and 3); both go through :func:`import_source` for steps 2 to 5.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

from vmferry.drivers import qemu_img, verified_copy
from vmferry.drivers.guest_agent import AgentError, read_view
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_import import (
    destination_facts,
    pool_reachable,
    volume_capacity,
    volume_names,
)
from vmferry.errors import BadInputError, BlockedError, MigrationFailedError, VmferryError
from vmferry.imports.domain_xml import render_domain_xml
from vmferry.imports.findings import evaluate
from vmferry.imports.guest_network import (
    AddressCheck,
    addresses_kept,
    all_back,
    v2v_static_ips,
)
from vmferry.imports.mapping import ImportOptions, ImportPlan, PlannedDisk, plan_import
from vmferry.model.disk_digest import copy_failure
from vmferry.model.finding import Finding, Severity, is_blocked
from vmferry.model.import_target import DestinationFacts
from vmferry.model.source_vm import SourceVm
from vmferry.model.vsphere import VsphereVmRef
from vmferry.sources import ImageOverrides, Limits, open_source
from vmferry.store.db import open_store

NoteFn = Callable[[str], None]
DiskProgressFn = Callable[[int, float], None]
ProgressFn = Callable[[float], None]
CopyResult = verified_copy.CopyResult
# one disk of the plan into the new qcow2 ``part``: the source read once and digested
CopyFn = Callable[[PlannedDisk, Path, ProgressFn], verified_copy.CopyResult]
BeginFn = Callable[[ImportPlan], None]  # the import is about to change things
# runs once nothing blocks, with the plan and where each disk's copy goes (its pool's
# directory, the volume's name + PART_SUFFIX): a vSphere VM is stopped there, or a warm
# import copies its disks while it runs and then stops it
PartFn = Callable[[PlannedDisk], Path]
BeforeCopyFn = Callable[[ImportPlan, PartFn], None]
# steps 3 to 5 done otherwise (a live import): request, vm, plan, destination facts, its
# connection, the private directory, the outcome so far, the clock
RunFn = Callable[
    [
        "ImportRequest",
        SourceVm,
        ImportPlan,
        DestinationFacts,
        LibvirtHost,
        Path,
        "ImportOutcome",
        "_Clock",
    ],
    "ImportOutcome",
]
PART_SUFFIX = ".vmferry-part"


def _quiet(*_args: object) -> None:
    return None


@dataclass(frozen=True)
class DiskOutcome:
    volume: str
    bytes_written: int
    checksum_match: bool | None  # None: the guest was converted, so its content changed
    # (the copy of virt-v2v's output is proved all the same)


@dataclass(frozen=True)
class LiveStats:
    """A live import's figures: from the start of the source's stop to the VM running on
    KVM, the streams started again after breaking, the bytes proved equal to the source's
    and those the guest wrote meanwhile (not compared), the address nbdkit served on."""

    downtime_ms: int
    resumes: int
    bytes_compared: int
    bytes_guest_written: int
    serve_address: str


@dataclass(frozen=True)
class ImportOutcome:
    vm: SourceVm
    destination: str
    status: str  # completed | failed | dry-run
    reason: str | None
    findings: tuple[Finding, ...]
    plan: ImportPlan
    domain_xml: str
    disks: tuple[DiskOutcome, ...] = ()
    started: bool = False
    phases_ms: dict[str, int] = field(default_factory=dict)  # read, convert, copy, verify, define
    volumes: tuple[str, ...] = ()  # the volumes it made (paths on the host), once defined
    # a vSphere source VM vmferry stopped (powered off) for the import, and left off
    source_stopped: bool = False
    # started: the source's static addresses (VMware Tools) against the guest agent's
    addresses: tuple[AddressCheck, ...] = ()
    live: LiveStats | None = None  # a live import's figures


@dataclass(frozen=True)
class ImportRequest:
    source: Path | VsphereVmRef
    to: str
    options: ImportOptions = field(default_factory=ImportOptions)
    overrides: ImageOverrides | None = None
    limits: Limits = field(default_factory=Limits)
    tool_limits: qemu_img.ToolLimits = field(default_factory=qemu_img.ToolLimits)
    virt_type: str = "auto"
    dry_run: bool = False
    start: bool = False
    workdir: Path | None = None


class _Clock:
    """Milliseconds spent per phase (a phase seen twice, e.g. per disk, adds up)."""

    def __init__(self) -> None:
        self.phases: dict[str, int] = {}
        self._last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases[phase] = self.phases.get(phase, 0) + round((now - self._last) * 1000)
        self._last = now


@contextmanager
def _private_dir(parent: Path | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vmferry-import-", dir=parent))  # mode 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def import_vm(
    request: ImportRequest,
    *,
    note: NoteFn = _quiet,
    on_disk_progress: DiskProgressFn = _quiet,
    on_begin: BeginFn | None = None,
    cutover_due: Callable[[], bool] | None = None,
) -> ImportOutcome:
    """Import ``request.source`` onto the registered host ``request.to``.

    Raises BadInputError (exit 2) for bad input, BlockedError (exit 3) when a finding
    blocks (the outcome is on the exception's ``outcome``), and VmferryError when a step
    fails; in every failure nothing is left on the destination. ``on_begin`` is called with
    the plan once the source is read, nothing blocks and it is no dry run: just before the
    import changes anything (a caller makes its job there). A warm vSphere import cuts
    over once ``cutover_due`` says so (None: as soon as its first copy is done).
    """
    open_store().get_host(request.to)  # an unknown host is bad input before any reading
    if isinstance(request.source, VsphereVmRef):
        from vmferry.service.vsphere_import import import_from_vsphere

        return import_from_vsphere(request, request.source, note, on_disk_progress, on_begin,
                                   cutover_due)  # fmt: skip
    source = request.source
    if not source.exists():
        raise BadInputError(f"{source}: no such file")
    with _private_dir(request.workdir) as workdir:
        note(f"reading {source.name}")
        clock = _Clock()
        vm = open_source(source, workdir=workdir, limits=request.limits,
                         overrides=request.overrides)  # fmt: skip
        clock.lap("read")
        return import_source(
            request, vm, _file_copier(request), workdir=workdir, clock=clock, note=note,
            on_disk_progress=on_disk_progress, on_begin=on_begin,
        )  # fmt: skip


def import_source(
    request: ImportRequest,
    vm: SourceVm,
    copy: CopyFn,
    *,
    workdir: Path,
    clock: _Clock,
    note: NoteFn = _quiet,
    on_disk_progress: DiskProgressFn = _quiet,
    source_findings: tuple[Finding, ...] = (),
    before_copy: BeforeCopyFn | None = None,
    on_begin: BeginFn | None = None,
    run: RunFn | None = None,
) -> ImportOutcome:
    """Steps 2 to 5 for a source read into ``vm``: ``source_findings`` join the import's
    own; ``before_copy`` runs once nothing blocks and it is no dry run (a vSphere VM is
    stopped there); ``copy`` reads each disk, or ``run`` does steps 3 to 5 its own way."""
    host = open_store().get_host(request.to)
    with LibvirtHost.connect(host.name, host.uri) as dst:
        dest = destination_facts(dst, request.virt_type)
        plan = plan_import(vm, request.options, dest)
        if not request.dry_run:  # each pool the disks go to: is it this machine's directory?
            pools = dict(dest.pools)
            for name in _pools_of(plan):
                if name in pools:
                    pools[name] = replace(pools[name], reachable=pool_reachable(dst, pools[name]))
            dest = replace(dest, pools=pools)
        findings = [*source_findings, *evaluate(vm, plan, dest, v2v_missing=_v2v_missing(plan))]
        findings += _existing_volumes(dst, plan, dest)
        xml = render_domain_xml(plan)
        clock.lap("plan")
        outcome = ImportOutcome(vm, host.name, "dry-run", None, tuple(findings), plan, xml,
                                phases_ms=clock.phases)  # fmt: skip
        if request.dry_run:
            return outcome
        if is_blocked(findings):
            ids = ", ".join(f.id for f in findings if f.severity is Severity.BLOCKER)
            raise ImportBlockedError(
                replace(outcome, status="failed", reason=f"blocked by checks: {ids}")
            )
        if on_begin is not None:
            on_begin(plan)
        if before_copy is not None:  # a vSphere guest to convert is fetched to the workdir
            staged = _staged(request, plan)
            before_copy(plan, (lambda disk: _staged_path(workdir, disk)) if staged
                        else (lambda disk: _part_path(dest, disk)))  # fmt: skip
            clock.lap("stop")
        try:
            if run is not None:
                return run(request, vm, plan, dest, dst, workdir, outcome, clock)
            return _run(request, vm, plan, dest, dst, workdir, outcome, clock, note,
                        on_disk_progress, copy)  # fmt: skip
        except ImportCancelledError:
            raise
        except VmferryError as exc:
            failed = replace(outcome, status="failed", reason=exc.message)
            raise ImportFailedError(failed) from exc


def _staged(request: ImportRequest, plan: ImportPlan) -> bool:
    """Whether the source's disks are first copied into the workdir: a vSphere guest that
    virt-v2v converts (it reads local files)."""
    return plan.convert_guest and isinstance(request.source, VsphereVmRef)


def _staging_dir(workdir: Path) -> Path:
    """The workdir's directory for a vSphere guest to convert (its disks, virt-v2v's input
    domain), made when first asked for: a warm import writes its copies there from its
    first round."""
    staging = workdir / "datastore"
    staging.mkdir(exist_ok=True)
    return staging


def _staged_path(workdir: Path, disk: PlannedDisk) -> Path:
    """Where a vSphere disk to convert is copied first (proved against the datastore)."""
    return _staging_dir(workdir) / f"{disk.volume}.qcow2"


def _file_copier(request: ImportRequest) -> CopyFn:
    def copy(disk: PlannedDisk, part: Path, progress: ProgressFn) -> verified_copy.CopyResult:
        data_file = None if disk.source_data_file is None else Path(disk.source_data_file)
        return verified_copy.copy_with_digest(Path(disk.source_path), disk.source_format,
                                              part, data_file=data_file,
                                              direct=not disk.source_written_here,
                                              limits=request.tool_limits,
                                              on_progress=progress)  # fmt: skip

    return copy


class ImportBlockedError(BlockedError):
    """A finding blocks the import (exit 3); nothing was written."""

    def __init__(self, outcome: ImportOutcome) -> None:
        super().__init__(f"import of {outcome.plan.name} {outcome.reason}")
        self.outcome = outcome


class ImportCancelledError(VmferryError):
    """`vmferry job cancel` (or `plan cancel`) stopped the import (exit 1): what it had
    made on the host is removed; a vSphere VM it had stopped runs again."""


class ImportFailedError(MigrationFailedError):
    """A step failed (exit 4); what it had written is removed, the source is untouched."""

    def __init__(self, outcome: ImportOutcome) -> None:
        super().__init__(f"import of {outcome.plan.name} failed: {outcome.reason}")
        self.outcome = outcome


def _v2v_missing(plan: ImportPlan) -> str | None:
    if not plan.convert_guest:
        return None
    from vmferry.drivers.virt_v2v import v2v_available

    return v2v_available()


def _existing_volumes(dst: LibvirtHost, plan: ImportPlan, dest: DestinationFacts) -> list[Finding]:
    found: list[Finding] = []
    for pool in _pools_of(plan):
        if pool not in dest.pools or not dest.pools[pool].active:
            continue
        taken = volume_names(dst, pool) & {d.volume for d in plan.disks if d.pool == pool}
        found += [
            Finding(
                "import.volume.exists",
                Severity.BLOCKER,
                f"volume '{name}' already exists in pool '{pool}'",
                "Pass --name with another name, or remove the volume.",
            )
            for name in sorted(taken)
        ]
    return found


def _pools_of(plan: ImportPlan) -> list[str]:
    """The pools the disks go to (mapped ones), in the disks' order, each once."""
    return list(dict.fromkeys(d.pool for d in plan.disks if d.pool is not None))


def _run(
    request: ImportRequest,
    vm: SourceVm,
    plan: ImportPlan,
    dest: DestinationFacts,
    dst: LibvirtHost,
    workdir: Path,
    outcome: ImportOutcome,
    clock: _Clock,
    note: NoteFn,
    on_disk_progress: DiskProgressFn,
    copy: CopyFn,
) -> ImportOutcome:
    sources = list(plan.disks)
    converted = False
    if plan.convert_guest:
        if _staged(request, plan):  # the datastore's disks, proved, then converted locally
            plan = _fetch_staged(request, plan, workdir, clock, note, on_disk_progress, copy)
        sources, restored = _convert_guest(request, vm, plan, workdir, note)
        converted = True
        copy = _file_copier(request)  # virt-v2v's output is local
        outcome = replace(outcome, findings=(*outcome.findings, *restored))
        clock.lap("convert")
    written: list[Path] = []
    final: list[Path] = []
    results: list[DiskOutcome] = []
    try:
        for disk in sources:
            part = _part_path(dest, disk)
            written.append(part)
            results.append(
                _copy_disk(request, disk, part, converted, clock, note, on_disk_progress, copy)
            )
        for part in written:
            target = part.with_name(part.name.removesuffix(PART_SUFFIX))
            if target.exists():
                raise VmferryError(f"{target} appeared during the import; not overwriting it")
            part.rename(target)
            final.append(target)
        written = []
        for pool in _pools_of(plan):  # the renames, on disk before the VM is defined
            verified_copy.sync_directory(_pool_dir(dest, pool))
            dst.refresh_pool(pool)
        for disk in plan.disks:
            if volume_capacity(dst, disk.pool or plan.pool, disk.volume) is None:
                raise VmferryError(f"{dest.host} does not see volume {disk.volume} in "
                                   f"{disk.pool}")  # fmt: skip
        note(f"defining {plan.name} on {dest.host}")
        dst.define_xml(outcome.domain_xml)
        clock.lap("define")
    except BaseException:
        for path in [*written, *final]:
            path.unlink(missing_ok=True)
        if final:
            for pool in _pools_of(plan):
                dst.refresh_pool(pool)
        raise
    started = False
    addresses: tuple[AddressCheck, ...] = ()
    if request.start:
        note(f"starting {plan.name}")
        dst.start(plan.name)
        started = True
        clock.lap("start")
        if vm.guest_network.addresses:
            addresses = _addresses_back(dst, plan.name, vm, note)
            clock.lap("addresses")
    return replace(outcome, status="completed", disks=tuple(results), started=started,
                   phases_ms=clock.phases, volumes=tuple(str(p) for p in final),
                   addresses=addresses)  # fmt: skip


ADDRESS_WAIT_S = 180.0  # a first boot, then its network up, under TCG too


def _addresses_back(dst: LibvirtHost, name: str, vm: SourceVm, note: NoteFn,
                    wait_s: float = ADDRESS_WAIT_S) -> tuple[AddressCheck, ...]:  # fmt: skip
    """Ask the guest agent until every address VMware Tools reported is up again, or
    ``wait_s`` passed (an agent that never answers: the addresses are not known)."""
    want = ", ".join(a for _mac, found in vm.guest_network.addresses for a in found)
    note(f"waiting for {name}'s guest agent to show its addresses ({want})")
    deadline = time.monotonic() + wait_s
    view = None
    while True:
        with suppress(AgentError):
            view = read_view(dst, name)
        checks = addresses_kept(vm.guest_network, view)
        if all_back(checks) or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    for check in checks:
        if check.kept is None:
            note(f"{check.mac}: not checked, the guest agent did not answer in {wait_s:g} s")
        else:
            shown = ", ".join(check.found or ()) or "none"
            note(f"{check.mac}: addresses {'kept' if check.kept else 'NOT kept'} "
                 f"(had {', '.join(check.expected)}; has {shown})")  # fmt: skip
    return checks


def _pool_dir(dest: DestinationFacts, pool: str) -> Path:
    return Path(dest.pools[pool].path or "")


def _part_path(dest: DestinationFacts, disk: PlannedDisk) -> Path:
    """Where disk's copy is written before its rename: in its pool's directory."""
    assert disk.pool is not None  # an unmapped disk blocks the import
    return _pool_dir(dest, disk.pool) / (disk.volume + PART_SUFFIX)


def _copy_disk(
    request: ImportRequest,
    disk: PlannedDisk,
    part: Path,
    converted: bool,
    clock: _Clock,
    note: NoteFn,
    on_disk_progress: DiskProgressFn,
    copy: CopyFn,
) -> DiskOutcome:
    """Copy one disk, digesting what is read from the source (read once), then read the
    copy back through QEMU and compare the digests; a copy that differs, or whose metadata
    ``qemu-img check`` faults, raises (the caller removes it)."""
    source = Path(disk.source_path)
    note(f"disk {disk.index}: {source.name} ({disk.source_format}) -> {disk.volume}")
    copied = copy(disk, part, lambda pct: on_disk_progress(disk.index, pct))
    clock.lap("copy")
    note(f"disk {disk.index}: reading the copy back to compare what the guest sees")
    with verified_copy.durable(part):
        problem = verified_copy.check_image(part, limits=request.tool_limits)
        written = verified_copy.digest_image(part, "qcow2", data_file=part,
                                             limits=request.tool_limits)  # fmt: skip
    clock.lap("verify")
    failure = copy_failure(copied.digest, written, problem)
    if failure is not None:
        raise VmferryError(
            f"disk {disk.index}: the copy of {source.name} {failure}; nothing was defined"
        )
    # a converted guest's disk is proved equal to virt-v2v's output, not to the source
    match = None if converted else True
    return DiskOutcome(disk.volume, qemu_img.allocated_bytes(part), match)


def _fetch_staged(request: ImportRequest, plan: ImportPlan, workdir: Path, clock: _Clock,
                  note: NoteFn, on_disk_progress: DiskProgressFn,
                  copy: CopyFn) -> ImportPlan:  # fmt: skip
    """Each vSphere disk copied into the workdir and proved equal to what was read from the
    datastore (a warm import's copies are there already: proved only); the plan's disks
    then point at those local copies, for virt-v2v."""
    local = []
    for disk in plan.disks:
        staged = _staged_path(workdir, disk)
        _copy_disk(request, disk, staged, False, clock, note, on_disk_progress, copy)
        note(f"disk {disk.index}: proved equal to the datastore's before the conversion")
        local.append(replace(disk, source_path=str(staged), source_format="qcow2",
                             source_data_file=str(staged),
                             source_written_here=True))  # fmt: skip
    return replace(plan, disks=tuple(local))


def _convert_guest(
    request: ImportRequest, vm: SourceVm, plan: ImportPlan, workdir: Path, note: NoteFn
) -> tuple[list[PlannedDisk], list[Finding]]:
    """Run virt-v2v; its disks (in the plan's order) replace the source's. The findings say
    which MACs virt-v2v lost (vmferry's own domain XML keeps them all)."""
    from vmferry.drivers.virt_v2v import convert_with_virt_v2v, input_domain_xml

    note("converting the guest with virt-v2v (minutes)")
    if isinstance(request.source, VsphereVmRef):  # its disks fetched into the workdir
        given = _staging_dir(workdir) / f"{plan.name}.xml"
        given.write_text(input_domain_xml(plan.name, vm.memory_mb, vm.vcpus,
                                          [Path(d.source_path) for d in plan.disks],
                                          vm.firmware.value))  # fmt: skip
        windows = vm.guest_os.family == "windows"
        result = convert_with_virt_v2v(
            given, input_mode="libvirtxml", out_dir=workdir / "v2v", on_progress=note,
            extra=v2v_static_ips(vm.guest_network) if windows else (),
        )  # fmt: skip
    elif request.source.suffix.lower() == ".vmx":
        result = convert_with_virt_v2v(
            request.source, input_mode="vmx", out_dir=workdir / "v2v", on_progress=note
        )
    else:
        given = Path(plan.disks[0].source_path)
        result = convert_with_virt_v2v(
            given, input_mode="disk", out_dir=workdir / "v2v", on_progress=note
        )
    if len(result.disks) != len(plan.disks):
        raise VmferryError(
            f"virt-v2v returned {len(result.disks)} disks for {len(plan.disks)} in the source"
        )
    kept = {n.mac.lower() for n in result.domain.nics if n.mac}
    restored = [
        Finding(
            "import.convert.mac_restored",
            Severity.INFO,
            f"virt-v2v dropped MAC {nic.mac}; vmferry keeps it on the imported VM",
            "Nothing to do: the guest keeps its network identity.",
        )
        for nic in plan.nics
        if nic.mac and nic.mac.lower() not in kept
    ]
    for finding in restored:
        note(finding.message)
    disks = [
        replace(
            d,
            source_path=str(path),
            source_format="qcow2",
            source_data_file=str(path),
            source_written_here=True,
        )
        for d, path in zip(plan.disks, result.disks, strict=True)
    ]
    return disks, restored
