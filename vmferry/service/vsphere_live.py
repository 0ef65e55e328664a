"""`vmferry import vsphere://SOURCE/VM --strategy live-import`: the VM runs on KVM after one
boot, while its disks stream in from the datastore; the source is left intact until the
stream is done and proved.

After the shared import's checks (:func:`vmferry.service.import_vm.import_source`), the run
(:class:`LiveRun`) replaces the copy:

1. each disk's raw extent (ESXi's ``-flat.vmdk``) is found, then the VM is stopped on
   vSphere (VMware Tools, or a power-off with ``--force``);
2. nbdkit serves each extent read-only over NBD from this machine
   (:mod:`vmferry.drivers.nbdkit_datastore`: curl plugin over the datastore's HTTPS URL,
   a secret export name per disk, broken downloads retried);
3. each disk becomes a new qcow2 overlay in its pool, the domain is defined with each
   overlay over its NBD backing (a read or write error pauses the guest instead of failing
   it), started paused, a checkpoint marks the moment (its dirty bitmaps record every
   write the guest makes from then on), and the VM runs: the downtime ends here;
4. QEMU streams each backing into its overlay (libvirt's block pull; under ``--bandwidth``
   the disks share it, a finished disk's share going to the others). A stream that breaks
   (the datastore out of reach longer than nbdkit retries) is started again after a
   growing delay (:func:`vmferry.imports.live_import.resume_delay`): nbdkit restarted when
   it died, the guest resumed when an I/O error paused it, and the pull copies only what the
   overlay lacks, so the guest's writes stay and what was streamed is not read again;
5. proof: once the guest's agent has connected (or up to 180 s after the start: libvirt
   misses an agent that connects during a backup job), a pull-mode backup since the
   checkpoint serves each disk as it is now with the bitmap of what the guest wrote; every
   other byte is read again from the datastore and must be equal;
6. the checkpoint is deleted, nbdkit stopped, and the guest's addresses checked as a cold
   import's.

Any failure or Ctrl-C before the proof passed removes the VM and its overlays from the
host (what the guest wrote on KVM goes with them; the source holds the VM as it was at the
stop). Ctrl-C powers the source on again; a failure does with ``--rollback``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from vmferry.drivers import libvirt_pull_backup as pull
from vmferry.drivers import libvirt_stream as stream
from vmferry.drivers.domain_edit import with_nbd_backing
from vmferry.drivers.libvirt_blockcopy import cancel_copy, copy_progress
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.nbd_client import NbdClient
from vmferry.drivers.nbdkit_datastore import (
    DatastoreExport,
    NbdkitServer,
    pick_port,
    route_source,
    serve_all,
)
from vmferry.drivers.qemu_img import ToolLimits, allocated_bytes, run_limited
from vmferry.errors import ToolError, VmferryError
from vmferry.imports.guest_network import AddressCheck
from vmferry.imports.live_import import clean_ranges, resume_delay, stream_share
from vmferry.imports.mapping import ImportPlan, PlannedDisk
from vmferry.model.import_target import DestinationFacts
from vmferry.model.source_vm import SourceVm
from vmferry.service import import_vm as core
from vmferry.service.vsphere_disks import DatastoreAccess, flat_extent
from vmferry.sources.vsphere_vm import DatastorePath, datastore_url

__all__ = ["LiveRun", "LiveSettings"]

CHECKPOINT = "vmferry-live"
POLL_S = 1.0
RESUME_BUDGET_S = 300.0  # a stream broken this long in a row fails the import
AGENT_WAIT_S = core.ADDRESS_WAIT_S  # from the start: how long a guest agent may take to connect


@dataclass(frozen=True)
class LiveSettings:
    serve_address: str | None = None  # None: this machine's address on its route to the host
    bandwidth_mib_s: int = 0  # every disk's stream together at most this (0: no cap)
    resume_budget_s: float = RESUME_BUDGET_S


class LiveRun:
    """One live import's run (see the module). ``before_copy`` finds the extents and stops
    the source; ``run`` does the rest."""

    def __init__(self, access: DatastoreAccess, stop: core.BeforeCopyFn,
                 settings: LiveSettings, note: core.NoteFn,
                 on_disk_progress: core.DiskProgressFn) -> None:  # fmt: skip
        self.access, self.stop, self.settings = access, stop, settings
        self.note, self.on_disk_progress = note, on_disk_progress
        self.extents: dict[int, DatastorePath] = {}
        self.stop_started: float | None = None

    def before_copy(self, plan: ImportPlan, part: core.PartFn) -> None:
        for disk in plan.disks:  # a sparse disk is refused here, before the VM stops
            self.extents[disk.index] = flat_extent(self.access, disk.source_path)
        self.stop_started = time.monotonic()
        self.stop(plan, part)

    def run(self, request: core.ImportRequest, vm: SourceVm, plan: ImportPlan,
            dest: DestinationFacts, dst: LibvirtHost, workdir: Path,
            outcome: core.ImportOutcome, clock: core._Clock) -> core.ImportOutcome:  # fmt: skip
        address = self.settings.serve_address or route_source(_host_of(dst.uri))
        cookie = workdir / "cookie"
        fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.access.cookie)
        exports = [self._export(disk, cookie, address) for disk in plan.disks]
        overlays = [core._pool_dir(dest, d.pool or plan.pool) / d.volume for d in plan.disks]
        servers: list[NbdkitServer] = []
        made: list[Path] = []  # the overlays this run created (only those are removed)
        defined = False
        try:
            servers = serve_all(exports, workdir)
            for disk, export, server in zip(plan.disks, exports, servers, strict=True):
                where = f"nbd://{export.address}:{export.port}"
                self.note(f"disk {disk.index}: {self.extents[disk.index]} served read-only at "
                          f"{where} (nbdkit pid {server.pid})")  # fmt: skip
            for disk, path in zip(plan.disks, overlays, strict=True):
                _create_overlay(path, disk.capacity_bytes, request.tool_limits)
                made.append(path)
            for pool in core._pools_of(plan):
                dst.refresh_pool(pool)
            pairs = zip(plan.disks, exports, strict=True)
            backings = {d.target_dev: (e.address, e.port, e.name) for d, e in pairs}
            xml = with_nbd_backing(outcome.domain_xml, backings)
            self.note(f"defining {plan.name} on {dest.host} over the datastore's disks")
            dst.define_xml(xml)
            defined = True
            targets = [d.target_dev for d in plan.disks]
            stream.start_paused(dst, plan.name)
            stream.create_checkpoint(dst, plan.name, CHECKPOINT, targets)
            pull.resume_thawed(dst, plan.name)
            downtime_ms = round((time.monotonic() - (self.stop_started or time.monotonic()))
                                * 1000)  # fmt: skip
            clock.lap("start")
            self.note(f"{plan.name} runs on {dest.host} ({downtime_ms} ms after the stop "
                      "began); streaming its disks from the datastore")  # fmt: skip
            running_since = time.monotonic()
            resumes = self._stream(dst, plan, servers)
            clock.lap("stream")
            self._await_agent(dst, plan.name, running_since)
            compared, written = self._prove(dst, plan, exports)
            clock.lap("verify")
            pull.delete_checkpoints(dst, plan.name, CHECKPOINT)
        except BaseException:
            self._remove(dst, plan.name, made, plan, defined)
            raise
        finally:
            for server in servers:
                server.stop()
        addresses: tuple[AddressCheck, ...] = ()
        if vm.guest_network.addresses:
            addresses = core._addresses_back(dst, plan.name, vm, self.note)
            clock.lap("addresses")
        disks = tuple(core.DiskOutcome(d.volume, allocated_bytes(p), True)
                      for d, p in zip(plan.disks, overlays, strict=True))  # fmt: skip
        live = core.LiveStats(downtime_ms, resumes, compared, written, address)
        return replace(outcome, status="completed", disks=disks, started=True,
                       phases_ms=clock.phases, volumes=tuple(str(p) for p in overlays),
                       addresses=addresses, live=live)  # fmt: skip

    def _export(self, disk: PlannedDisk, cookie: Path, address: str) -> DatastoreExport:
        source = self.access.source
        url = datastore_url(source.host, source.port, self.extents[disk.index],
                            self.access.datacenter)  # fmt: skip
        return DatastoreExport(url, disk.capacity_bytes, cookie, address, pick_port(address),
                               secrets.token_urlsafe(24), source.ca_file,
                               source.insecure)  # fmt: skip

    def _stream(self, dst: LibvirtHost, plan: ImportPlan, servers: list[NbdkitServer]) -> int:
        """Pull every disk; start a broken pull again (see the module). The times it did."""
        by_target = {d.target_dev: (d, s) for d, s in zip(plan.disks, servers, strict=True)}
        share = stream_share(self.settings.bandwidth_mib_s, len(by_target))
        for target in by_target:
            stream.start_pull(dst, plan.name, target, share)
        pending = set(by_target)
        broken_since: float | None = None
        attempts = resumes = 0
        while pending:
            time.sleep(POLL_S)
            broken: list[str] = []
            for target in sorted(pending):
                disk, _server = by_target[target]
                progress = copy_progress(dst, plan.name, target)
                if progress is not None:
                    done, total = progress
                    self.on_disk_progress(disk.index, 100.0 * done / total if total else 0.0)
                elif target in stream.backed_targets(dst, plan.name):
                    broken.append(target)
                else:
                    pending.discard(target)
                    self.on_disk_progress(disk.index, 100.0)
                    self.note(f"disk {disk.index}: streamed; it no longer reads the datastore")
            wanted = stream_share(self.settings.bandwidth_mib_s, len(pending))
            if share and pending and wanted != share:  # a finished disk's share to the rest
                share = wanted
                for target in sorted(pending - set(broken)):
                    with contextlib.suppress(VmferryError):  # (it may end meanwhile)
                        stream.set_pull_speed(dst, plan.name, target, share)
            if not broken:
                if pending and stream.io_error_paused(dst, plan.name):
                    self._resume_paused(dst, plan.name)  # a read failed, the streams did not
                elif pending:
                    broken_since, attempts = None, 0
                continue
            now = time.monotonic()
            broken_since = broken_since or now
            attempts += 1
            why = "; ".join(f"disk {by_target[t][0].index}: {by_target[t][1].last_message()}"
                            for t in broken)  # fmt: skip
            if now - broken_since > self.settings.resume_budget_s:
                raise VmferryError(f"the stream from the datastore stayed broken for "
                                   f"{self.settings.resume_budget_s:g} s ({why})")  # fmt: skip
            delay = resume_delay(attempts)
            self.note(f"the stream broke ({why}); what is already on {dst.name} is kept; "
                      f"starting it again in {delay:g} s")  # fmt: skip
            time.sleep(delay)
            for target in broken:
                server = by_target[target][1]
                if not server.alive():
                    try:
                        server.restart()
                    except ToolError as exc:  # tried again at the next break
                        self.note(f"nbdkit did not start again: {exc.message}")
                        continue
                    self.note(f"disk {by_target[target][0].index}: nbdkit started again "
                              f"(pid {server.pid})")  # fmt: skip
            if stream.io_error_paused(dst, plan.name):
                self._resume_paused(dst, plan.name)
            for target in broken:
                try:
                    stream.start_pull(dst, plan.name, target, share)
                except VmferryError as exc:
                    self.note(f"the stream of {target} did not start again: {exc.message}")
                    continue
                resumes += 1
        return resumes

    def _resume_paused(self, dst: LibvirtHost, name: str) -> None:
        self.note(f"{name} was paused by a read error of its backing: resuming it")
        pull.resume_thawed(dst, name)

    def _await_agent(self, dst: LibvirtHost, name: str, since: float) -> None:
        """Before the proof's backup job: give the guest's agent until ``AGENT_WAIT_S``
        after the VM started to open its channel. libvirt handles the channel's opening in
        a job of its own, which the backup job shuts out: an agent that connects during the
        proof stays unknown to libvirt until the VM restarts (seen with libvirt 11.3)."""
        if stream.agent_channel_state(dst.domain_xml(name)) in (None, "connected"):
            return
        left = AGENT_WAIT_S - (time.monotonic() - since)
        if left <= 0:
            return
        self.note(f"waiting up to {left:.0f} s for {name}'s guest agent to connect before "
                  "the proof (libvirt would not see it connect during the proof)")  # fmt: skip
        deadline = time.monotonic() + left
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
            if stream.agent_channel_state(dst.domain_xml(name)) == "connected":
                return
        self.note(f"{name}'s guest agent did not connect: proving without it")

    def _prove(self, dst: LibvirtHost, plan: ImportPlan,
               exports: list[DatastoreExport]) -> tuple[int, int]:  # fmt: skip
        """Compare each streamed disk with the datastore's wherever the guest did not
        write (module, step 5): (bytes compared, bytes the guest wrote), over all disks."""
        targets = [d.target_dev for d in plan.disks]
        self.note("proving each disk against the datastore where the guest did not write")
        backup = pull.begin_pull(dst, plan.name, targets, [], checkpoint=None,
                                 incremental=CHECKPOINT)  # fmt: skip
        compared = written = 0
        try:
            for disk, export in zip(plan.disks, exports, strict=True):
                name = backup.exports[disk.target_dev]
                context = pull.meta_context(backup, disk.target_dev)
                bitmap = NbdClient.connect_tcp(backup.address, backup.port, export=name,
                                               meta_context=context)  # fmt: skip
                with contextlib.closing(bitmap):
                    dirty = list(pull.changed_extents(bitmap, dirty_bitmap=True, gap=0))
                pieces = clean_ranges(disk.capacity_bytes, dirty)
                done = _compare(backup, name, export, pieces, disk.index)
                guest = sum(length for _off, length in dirty)
                self.note(f"disk {disk.index}: {done} bytes equal to the datastore's; "
                          f"{guest} bytes written by the guest since it started")  # fmt: skip
                compared += done
                written += guest
        finally:
            pull.end_pull(dst, plan.name)
        return compared, written

    def _remove(self, dst: LibvirtHost, name: str, overlays: list[Path], plan: ImportPlan,
                defined: bool) -> None:  # fmt: skip
        """Undo the run on the host (what it made, nothing else); never raises."""
        self.note(f"removing {name} and its overlays from {dst.name}")
        if defined:
            for disk in plan.disks:
                with contextlib.suppress(VmferryError):
                    cancel_copy(dst, name, disk.target_dev)
            with contextlib.suppress(VmferryError):
                pull.end_pull(dst, name)
            with contextlib.suppress(VmferryError):
                dst.destroy(name)
            with contextlib.suppress(VmferryError):
                dst.undefine(name)
        for path in overlays:
            path.unlink(missing_ok=True)
        for pool in core._pools_of(plan):
            with contextlib.suppress(VmferryError):
                dst.refresh_pool(pool)


def _compare(backup: pull.PullBackup, name: str, export: DatastoreExport,
             pieces: list[tuple[int, int]], index: int) -> int:  # fmt: skip
    """Read ``pieces`` of the backup's export and of the datastore's; the bytes compared.
    A difference raises, naming its offset."""
    size = max((length for _o, length in pieces), default=0)
    mine, theirs = memoryview(bytearray(size)), memoryview(bytearray(size))
    done = 0
    kvm = NbdClient.connect_tcp(backup.address, backup.port, export=name)
    with (
        contextlib.closing(kvm),
        contextlib.closing(
            NbdClient.connect_tcp(export.address, export.port, export=export.name)
        ) as source,
    ):
        for offset, length in pieces:
            for client, buf in ((kvm, mine), (source, theirs)):
                client.read(offset, buf[:length]).fill_holes()
            if mine[:length] != theirs[:length]:
                at = next(i for i in range(length) if mine[i] != theirs[i])
                raise VmferryError(f"disk {index}: byte {offset + at} differs from the "
                                   "datastore's where the guest did not write")  # fmt: skip
            done += length
    return done


def _create_overlay(path: Path, capacity: int, limits: ToolLimits) -> None:
    if path.exists():
        raise VmferryError(f"{path} exists; not overwriting it")
    run_limited(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(capacity)], limits)


def _host_of(uri: str) -> str:
    return urlparse(uri).hostname or "127.0.0.1"
