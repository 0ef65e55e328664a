"""One running live migration, driven through libvirt (peer-to-peer) and QEMU's monitor.

libvirt lets only a few calls through while a migration job runs: job statistics, the
downtime limit, the speed, post-copy, abort, and QEMU monitor passthrough. Everything here
uses just those. ``migrateToURI3`` blocks for the whole migration, so it runs in a thread.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import VmferryError
from vmferry.model.migration import ProgressSample


@dataclass(frozen=True)
class MigrationRequest:
    """What to ask libvirt for. ``unsafe`` only when vmferry itself verified that the
    destination sees every disk (libvirt's own test only knows NFS/GFS2/Ceph-like
    filesystems); ``copy_disks`` are the targets to copy when storage is not shared."""

    vm: str
    destination_uri: str
    migration_uri: str | None
    bandwidth_mib_s: int | None
    allow_postcopy: bool
    unsafe: bool = False
    copy_disks: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompletedStats:
    total_time_ms: int | None
    downtime_ms: int | None
    transferred_bytes: int | None
    iterations: int | None


def _flags(request: MigrationRequest) -> int:
    flags: int = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        | libvirt.VIR_MIGRATE_AUTO_CONVERGE  # dormant until the policy raises the throttle
    )
    if request.allow_postcopy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY  # enables it; the policy decides when to switch
    if request.unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if request.copy_disks:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    return flags


def _params(request: MigrationRequest) -> dict[str, Any]:
    params: dict[str, Any] = {
        # auto-converge stays (almost) off until the policy escalates: 1% steps
        libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL: 1,
        libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT: 1,
    }
    if request.migration_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = request.migration_uri
    if request.bandwidth_mib_s:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = request.bandwidth_mib_s
    if request.copy_disks:
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(request.copy_disks)
    return params


def sample_from_stats(stats: dict[str, Any], postcopy: bool) -> ProgressSample:
    """Pure: libvirt's job statistics as a :class:`ProgressSample`."""
    page = int(stats.get("memory_page_size", 4096) or 4096)
    return ProgressSample(
        elapsed_ms=int(stats.get("time_elapsed", 0)),
        iteration=int(stats.get("memory_iteration", 0)),
        memory_total_bytes=int(stats.get("memory_total", 0)),
        memory_processed_bytes=int(stats.get("memory_processed", 0)),
        memory_remaining_bytes=int(stats.get("memory_remaining", 0)),
        dirty_rate_bytes_s=int(stats.get("memory_dirty_rate", 0)) * page,
        throughput_bytes_s=int(stats.get("memory_bps", 0) or 0),
        expected_downtime_ms=int(stats["downtime"]) if "downtime" in stats else None,
        throttle_pct=int(stats.get("auto_converge_throttle", 0) or 0),
        postcopy=postcopy,
        disk_remaining_bytes=int(stats.get("disk_remaining", 0) or 0),
    )


def completed_from_stats(stats: dict[str, Any]) -> CompletedStats:
    """Pure: libvirt's statistics of a completed migration job."""

    def num(key: str) -> int | None:
        return int(stats[key]) if key in stats else None

    transferred = num("data_processed")
    if transferred is None:
        transferred = num("memory_processed")
    return CompletedStats(num("time_elapsed"), num("downtime"), transferred,
                          num("memory_iteration"))  # fmt: skip


class RunningMigration:
    """A migration of ``request.vm`` from ``source``, started by :meth:`start`."""

    def __init__(self, source: LibvirtHost, request: MigrationRequest) -> None:
        self.source = source
        self.request = request
        self._dom = source._lookup(request.vm)
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._postcopy = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"migrate:{self.request.vm}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _run(self) -> None:
        try:
            self._dom.migrateToURI3(self.request.destination_uri, _params(self.request),
                                    _flags(self.request))  # fmt: skip
        except libvirt.libvirtError as exc:
            self._error = str(exc.get_error_message() or exc)

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def wait(self, timeout_s: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.done()

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def in_postcopy(self) -> bool:
        return self._postcopy

    def sample(self) -> ProgressSample | None:
        """The job's progress now, or None when no migration job is (yet, still) active."""
        try:
            stats = self._dom.jobStats(0)
        except libvirt.libvirtError:
            return None
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return sample_from_stats(stats, self._postcopy)

    def set_downtime(self, downtime_ms: int) -> int:
        """Set the downtime limit and read it back (it must take, or we say so)."""
        try:
            self._dom.migrateSetMaxDowntime(downtime_ms, 0)
            return int(self._dom.migrateGetMaxDowntime(0))
        except libvirt.libvirtError as exc:
            raise VmferryError(f"cannot set the downtime limit: {exc.get_error_message()}") from exc

    def set_throttle(self, initial: int, increment: int, cap: int) -> dict[str, int]:
        """Raise QEMU's auto-converge throttle (libvirt has no call for it during a job).

        Returns the values QEMU reports afterwards."""
        args = {"cpu-throttle-initial": initial, "cpu-throttle-increment": increment,
                "max-cpu-throttle": cap}  # fmt: skip
        self._qmp("migrate-set-parameters", args)
        now = self._qmp("query-migrate-parameters", None)
        return {k: int(now.get(k, -1)) for k in args}

    def start_postcopy(self) -> None:
        try:
            self._dom.migrateStartPostCopy(0)
        except libvirt.libvirtError as exc:
            raise VmferryError(f"cannot switch to post-copy: {exc.get_error_message()}") from exc
        self._postcopy = True

    def abort(self) -> None:
        """Abort the migration; the source keeps running. Harmless if it already ended."""
        with contextlib.suppress(libvirt.libvirtError):
            self._dom.abortJob()

    def _qmp(self, command: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        try:
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(self._dom, json.dumps(message), 0))
        except libvirt.libvirtError as exc:
            raise VmferryError(f"QEMU monitor {command}: {exc.get_error_message()}") from exc
        if "error" in reply:
            raise VmferryError(f"QEMU monitor {command}: {reply['error'].get('desc')}")
        result: dict[str, Any] = reply.get("return", {})
        return result


def completed_stats(destination: LibvirtHost, vm: str, *, wait_s: float = 5.0) -> CompletedStats:
    """Statistics of the finished incoming migration, read on the destination."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            stats = destination._lookup(vm).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
            return completed_from_stats(stats)
        except (libvirt.libvirtError, VmferryError):
            if time.monotonic() > deadline:
                return CompletedStats(None, None, None, None)
            time.sleep(0.1)
