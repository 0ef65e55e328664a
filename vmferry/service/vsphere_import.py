"""`vmferry import vsphere://SOURCE/VM`: a cold import from a running vSphere, no export.

1. Log in to the source (its password from the caller), find the VM (none: one line, exit
   2, naming the source), read it into the same ``SourceVm`` a VMX gives
   (:func:`vmferry.sources.vsphere_vm.source_vm_from_vsphere`) and decide how to stop it
   (:func:`vmferry.imports.vsphere_power.decide_power_off`): a refusal (VMware Tools not
   running, no ``--force``) ends here with nothing changed; in a dry run it is a blocker
   finding instead, and nothing is ever powered off.
2. The shared import (:func:`vmferry.service.import_vm.import_source`): destination facts,
   mapping, findings (the disks vmferry cannot read are blockers), then, when nothing
   blocks, the VM is stopped (guest shutdown through VMware Tools, waited for; with
   ``--force`` a power-off when Tools do not run or the guest does not stop in time), then
   every disk is read from the datastore (:mod:`vmferry.service.vsphere_disks`), proved,
   renamed, defined, started.
3. When the import fails after vmferry powered the VM off, ``--rollback`` powers it on
   again (Ctrl-C and `vmferry job cancel` always do). The VM is otherwise left as it is:
   powered off, its configuration untouched.

``--strategy warm`` copies the disks while the VM runs (:mod:`vmferry.service.vsphere_warm`);
``--strategy live-import`` runs it on KVM at once while its disks stream in
(:mod:`vmferry.service.vsphere_live`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from vmferry.drivers.vsphere import VsphereVmHandle, ssl_context, vsphere_session
from vmferry.errors import BadInputError, VmferryError
from vmferry.imports.live_import import convert_blocker
from vmferry.imports.mapping import PlannedDisk, needs_guest_conversion
from vmferry.imports.vsphere_power import PowerAction, decide_power_off
from vmferry.model.finding import Finding, Severity
from vmferry.model.vsphere import VsphereVmRef
from vmferry.service import import_vm as core
from vmferry.service.lease import owner_alive, process_lease
from vmferry.service.vsphere_disks import DatastoreAccess, copy_datastore_disk
from vmferry.service.vsphere_live import LiveRun, LiveSettings
from vmferry.service.vsphere_sources import get_source
from vmferry.service.vsphere_warm import WarmCopy, WarmSettings
from vmferry.sources.vsphere_inventory import vm_from_raw
from vmferry.sources.vsphere_vm import disk_blockers, source_vm_from_vsphere, warm_blockers
from vmferry.store.db import open_store

__all__ = ["import_from_vsphere"]

POWER_TASK_TIMEOUT_S = 300.0
KEEPALIVE_S = 600.0  # the session asked the time this often (vCenter's idle timeout: 30 min)
STRATEGIES = ("cold", "warm", "live-import")


def import_from_vsphere(
    request: core.ImportRequest,
    ref: VsphereVmRef,
    note: core.NoteFn,
    on_disk_progress: core.DiskProgressFn,
    on_begin: core.BeginFn | None = None,
    cutover_due: Callable[[], bool] | None = None,
) -> core.ImportOutcome:
    """Import the vSphere VM ``ref`` as ``request`` says (see the module); a warm import
    cuts over once ``cutover_due`` says so (None: after its first copy)."""
    if ref.connections < 1 or ref.connections > 32:
        raise BadInputError(f"--connections {ref.connections}: expected 1 to 32")
    if ref.strategy not in STRATEGIES:
        raise BadInputError(f"--strategy {ref.strategy!r}: expected cold, warm or live-import")
    if ref.bandwidth_mib_s < 0:
        raise BadInputError(f"--bandwidth {ref.bandwidth_mib_s}: expected >= 0 MiB/s")
    if ref.precopy_interval_s <= 0:
        raise BadInputError(f"--precopy-interval {ref.precopy_interval_s:g}: expected > 0 s")
    source = get_source(ref.source)
    with vsphere_session(source, ref.password, keepalive_s=KEEPALIVE_S) as session:
        note(f"reading {ref.vm} from vSphere source {source.name}")
        clock = core._Clock()
        handle = session.find_vm(ref.vm)
        inventory_vm = vm_from_raw(handle.raw, handle.networks)
        if inventory_vm is None:
            raise BadInputError(f"{ref.vm} on {source.name} has no configuration yet")
        vm = source_vm_from_vsphere(handle.raw, inventory_vm)
        findings = disk_blockers(vm.name, list(handle.raw.disks))
        if vm.guest_network.addresses and vm.guest_os.family == "windows":
            converted = needs_guest_conversion(vm, request.options.convert_guest)
            findings.append(_windows_addresses(vm.guest_network.addresses, converted))
        warm = ref.strategy == "warm" and handle.power_state() == "poweredOn"
        if ref.strategy == "warm" and not warm:
            note(f"{ref.vm} is {handle.power_state()}: nothing changes while it is off, so it "
                 "is read once, as a cold import")  # fmt: skip
        live = ref.strategy == "live-import"
        if warm or live:
            findings += warm_blockers(vm.name, list(handle.raw.disks), ref.strategy)
        if live and needs_guest_conversion(vm, request.options.convert_guest):
            findings.append(convert_blocker(vm.name))
        decision = decide_power_off(vm.name, handle.power_state(), handle.tools_state(),
                                    ref.force)  # fmt: skip
        if decision.refusal is not None:
            if not request.dry_run:
                raise BadInputError(decision.refusal)
            findings.append(Finding("import.vsphere.power", Severity.BLOCKER,
                                    decision.refusal.split(":")[0],
                                    "Shut the guest down, or pass --force."))  # fmt: skip
        clock.lap("read")
        access = DatastoreAccess(source, handle.datacenter, session.session_cookie,
                                 ssl_context(source.ca_file, source.insecure),
                                 ref.connections, ref.bandwidth_mib_s)  # fmt: skip
        stopper = _Stopper(handle, decision.action, ref, note)
        with core._private_dir(request.workdir) as workdir:

            def copy(disk: PlannedDisk, part: Path, progress: core.ProgressFn) -> core.CopyResult:
                return copy_datastore_disk(access, disk.source_path, part, workdir=workdir,
                                           limits=request.limits,
                                           tool_limits=request.tool_limits,
                                           on_progress=progress)  # fmt: skip

            before_copy: core.BeforeCopyFn = stopper.stop
            run: core.RunFn | None = None
            if live:
                settings = LiveSettings(ref.serve_address, ref.bandwidth_mib_s)
                live_run = LiveRun(access, stopper.stop, settings, note, on_disk_progress)
                before_copy, run = live_run.before_copy, live_run.run
            if warm:
                warm_settings = WarmSettings(
                    ref.precopy_interval_s,
                    cutover_due or (lambda: True),
                    core.PART_SUFFIX,
                    request.tool_limits.timeout_s,
                    leftovers_removable=lambda: not _other_import_runs(str(ref)),
                )
                warm_copy = WarmCopy(handle, access, warm_settings, stopper.stop, note,
                                     on_disk_progress)  # fmt: skip
                before_copy, copy = warm_copy.run, warm_copy.copy
            try:
                outcome = core.import_source(
                    request, vm, copy, workdir=workdir, clock=clock, note=note,
                    on_disk_progress=on_disk_progress, source_findings=tuple(findings),
                    before_copy=before_copy, on_begin=on_begin, run=run,
                )  # fmt: skip
            except (KeyboardInterrupt, core.ImportCancelledError) as stopped_by:
                if stopper.stopped:  # stopped by hand: the source runs again, whatever --rollback
                    why = ("cancelled" if isinstance(stopped_by, core.ImportCancelledError)
                           else "interrupted")  # fmt: skip
                    note(f"{why}: powering {ref.vm} on again on vSphere")
                    try:
                        stopper.handle.power_on(POWER_TASK_TIMEOUT_S)
                    except VmferryError as exc:
                        note(f"{ref.vm} could NOT be powered on again: {exc.message}")
                raise
            except core.ImportFailedError as exc:
                if not (stopper.stopped and ref.rollback):
                    raise core.ImportFailedError(
                        replace(exc.outcome, source_stopped=stopper.stopped)
                    ) from exc
                raise core.ImportFailedError(_rolled_back(exc.outcome, stopper, note)) from exc
            return replace(outcome, source_stopped=stopper.stopped)


def _other_import_runs(label: str) -> bool:
    """Whether an import of the vSphere VM ``label`` (``vsphere://SOURCE/VM``) other than
    this process's own runs, as this machine's store knows."""
    with open_store() as store:
        me = process_lease(store).owner_id
        return any(job.kind == "import" and job.source == label and job.owner_id != me
                   and owner_alive(store, job) for job in store.unfinished_jobs())  # fmt: skip


def _windows_addresses(addresses: tuple[tuple[str, tuple[str, ...]], ...],
                       converted: bool) -> Finding:  # fmt: skip
    """A Windows guest's static addresses: given to its new NICs by virt-v2v (``--mac
    MAC:ip:...``) when it converts the guest, else lost (Windows sees new NICs)."""
    shown = "; ".join(f"{mac}: {', '.join(found)}" for mac, found in addresses)
    if converted:
        return Finding(
            "import.vsphere.static_ip_windows", Severity.INFO,
            f"VMware Tools report these addresses in the Windows guest ({shown}); virt-v2v "
            "sets the IPv4 ones again on its new NICs, per MAC, at their first boot",
            "Nothing to do; after --start the import checks through the guest agent that "
            "they came back (when the guest runs one).",
        )  # fmt: skip
    return Finding(
        "import.vsphere.static_ip_windows", Severity.WARNING,
        f"VMware Tools report these addresses in the Windows guest ({shown}); its new NICs "
        "on KVM do not get them without virt-v2v (--convert-guest never)",
        "Import with --convert-guest auto (virt-v2v sets them per MAC), or set them again "
        "in the guest after the import (this finding lists them).",
    )  # fmt: skip


class _Stopper:
    """Stops the VM once the import may go on; remembers whether it did."""

    def __init__(self, handle: VsphereVmHandle, action: PowerAction | None, ref: VsphereVmRef,
                 note: core.NoteFn) -> None:  # fmt: skip
        self.handle, self.action, self.ref, self.note = handle, action, ref, note
        self.stopped = False

    def stop(self, _plan: object = None, _pool: object = None) -> None:
        """Stop the VM (a cold import's ``before_copy``; a warm import's cutover)."""
        name = self.handle.name
        if self.action is PowerAction.NONE:
            self.note(f"{name} is powered off: read as it is")
            return
        if self.action is PowerAction.SHUTDOWN_GUEST:
            self.note(f"shutting {name} down through VMware Tools")
            try:
                self.handle.shutdown_guest(self.ref.shutdown_timeout_s)
            except VmferryError:
                if not self.ref.force or self.handle.power_state() == "poweredOff":
                    raise
                self.note(f"{name} did not stop in time: powering it off (--force)")
                self.handle.power_off(POWER_TASK_TIMEOUT_S)
        else:
            self.note(f"powering {name} off (--force: its guest is not asked)")
            self.handle.power_off(POWER_TASK_TIMEOUT_S)
        self.stopped = True


def _rolled_back(
    outcome: core.ImportOutcome, stopper: _Stopper, note: core.NoteFn
) -> core.ImportOutcome:
    name = stopper.handle.name
    note(f"--rollback: powering {name} on again on vSphere")
    try:
        stopper.handle.power_on(POWER_TASK_TIMEOUT_S)
    except VmferryError as exc:
        return replace(outcome, reason=f"{outcome.reason}; {name} could NOT be powered on "
                                       f"again: {exc.message}")  # fmt: skip
    return replace(outcome, reason=f"{outcome.reason}; {name} is powered on again on vSphere")
