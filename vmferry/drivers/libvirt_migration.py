"""One running live migration, driven through libvirt (peer-to-peer) and QEMU's monitor.

libvirt lets only a few calls through while a migration job runs: job statistics, the
downtime limit, the speed, post-copy, abort, and QEMU monitor passthrough. Everything here
uses just those. ``migrateToURI3`` blocks for the whole migration, so it runs in a thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt
import libvirt_qemu

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.threads import call_in_thread
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
    tls: bool = False  # encrypt the stream (VIR_MIGRATE_TLS; both hosts' QEMU need certificates)
    parallel: int = 0  # multifd channels (VIR_MIGRATE_PARALLEL) when 2 or more
    compression: str | None = None  # "zstd" (multifd) or "xbzrle" (VIR_MIGRATE_COMPRESSED)
    # --to-pool: (target, path on the destination) of each copied disk, and the definition
    # the destination starts the VM with (the source's, those disks at those paths)
    copy_paths: tuple[tuple[str, str], ...] = ()
    dest_xml: str | None = None


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
    if request.tls:
        flags |= libvirt.VIR_MIGRATE_TLS
    if request.copy_disks:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    if request.parallel >= 2:
        flags |= libvirt.VIR_MIGRATE_PARALLEL
    if request.compression:
        flags |= libvirt.VIR_MIGRATE_COMPRESSED
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
        if request.allow_postcopy:  # QEMU's post-copy bandwidth is unlimited unless set
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = request.bandwidth_mib_s
    if request.copy_disks:
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(request.copy_disks)
    if request.dest_xml is not None:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = request.dest_xml
    if request.parallel >= 2:
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = request.parallel
    if request.compression:
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = request.compression
    return params


def _num(stats: dict[str, Any], key: str) -> int | None:
    """A statistic as an int; None when libvirt left it out or gave no value."""
    value = stats.get(key)
    return None if value is None else int(value)


def sample_from_stats(stats: dict[str, Any], postcopy: bool) -> ProgressSample:
    """Pure: libvirt's job statistics as a :class:`ProgressSample` (missing or empty
    fields count as 0)."""

    def num(key: str) -> int:
        return _num(stats, key) or 0

    return ProgressSample(
        elapsed_ms=num("time_elapsed"),
        iteration=num("memory_iteration"),
        memory_total_bytes=num("memory_total"),
        memory_processed_bytes=num("memory_processed"),
        memory_remaining_bytes=num("memory_remaining"),
        dirty_rate_bytes_s=num("memory_dirty_rate") * (num("memory_page_size") or 4096),
        throughput_bytes_s=num("memory_bps"),
        expected_downtime_ms=_num(stats, "downtime"),
        throttle_pct=num("auto_converge_throttle"),
        postcopy=postcopy,
        disk_remaining_bytes=num("disk_remaining"),
        disk_total_bytes=num("disk_total"),
        disk_processed_bytes=num("disk_processed"),
        disk_throughput_bytes_s=num("disk_bps"),
    )


def completed_from_stats(stats: dict[str, Any]) -> CompletedStats:
    """Pure: libvirt's statistics of a completed migration job."""
    transferred = _num(stats, "data_processed")
    if transferred is None:
        transferred = _num(stats, "memory_processed")
    return CompletedStats(_num(stats, "time_elapsed"), _num(stats, "downtime"), transferred,
                          _num(stats, "memory_iteration"))  # fmt: skip


T = TypeVar("T")
SAMPLE_TIMEOUT_S = 5.0  # libvirt answers job statistics in milliseconds when it is well


class RunningMigration:
    """A migration of ``request.vm`` from ``source``, started by :meth:`start`."""

    def __init__(self, source: LibvirtHost, request: MigrationRequest) -> None:
        self.source = source
        self.request = request
        self._dom = source._lookup(request.vm)
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._postcopy = False
        self._abort_pending = False
        self._succeeded = False
        self._began: float | None = None  # monotonic, around libvirt's migrate call
        self._ended: float | None = None
        self._hung: dict[str, threading.Thread] = {}
        self.abort_unanswered = False  # an abort got no answer in time on this connection

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name=f"migrate:{self.request.vm}",
                                  daemon=True)  # fmt: skip
        thread.start()
        self._thread = thread

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _run(self) -> None:
        self._began = time.monotonic()
        try:
            self._dom.migrateToURI3(self.request.destination_uri, _params(self.request),
                                    _flags(self.request))  # fmt: skip
        except libvirt.libvirtError as exc:
            self._error = str(exc.get_error_message() or exc)
        except Exception as exc:  # never taken for success
            self._error = f"{type(exc).__name__}: {exc}"
        else:
            self._succeeded = True
        finally:
            self._ended = time.monotonic()

    @property
    def call_ms(self) -> int | None:
        """How long libvirt's migrate call took (None until it returned): the job's whole
        time as vmferry's clock sees it, from the call to the destination running alone."""
        if self._began is None or self._ended is None:
            return None
        return round((self._ended - self._began) * 1000)

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
    def succeeded(self) -> bool:
        """libvirt reported the migration completed (False while it runs)."""
        return self.done() and self._succeeded

    @property
    def in_postcopy(self) -> bool:
        return self._postcopy

    def _bounded(self, what: str, call: Callable[[], T], timeout_s: float) -> T:
        """``call()`` in a background thread, waited for at most ``timeout_s``; VmferryError
        if it does not return by then, and at once while an earlier ``what`` still hangs
        (so hung calls do not pile up on the connection). Its own exceptions pass through."""
        hung = self._hung.get(what)
        if hung is not None and hung.is_alive():
            hung.join(timeout_s)
            if hung.is_alive():
                raise VmferryError(f"libvirt has not answered {what} yet")
        thread, outcome = call_in_thread(call, f"{what}:{self.request.vm}")
        self._hung[what] = thread
        thread.join(timeout_s)
        if thread.is_alive():
            raise VmferryError(f"libvirt did not answer {what} within {timeout_s:g} s")
        return outcome.result()

    def sample(self, timeout_s: float = SAMPLE_TIMEOUT_S) -> ProgressSample | None:
        """The job's progress now, or None when no migration job is (yet, still) active, or
        when libvirt does not answer within ``timeout_s``.

        The statistics are read in a background thread (:meth:`_bounded`), so a call that
        hangs cannot stop the engine's loop and its guards; while it hangs, no second call
        is made."""
        try:
            stats = self._bounded("job statistics", lambda: self._dom.jobStats(0), timeout_s)
        except (libvirt.libvirtError, VmferryError):
            return None
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return sample_from_stats(stats, self._postcopy)

    def set_downtime(self, downtime_ms: int) -> int:
        """Set the downtime limit and read it back (it must take, or we say so)."""

        def set_and_read() -> int | None:
            self._dom.migrateSetMaxDowntime(downtime_ms, 0)
            value: int | None = self._dom.migrateGetMaxDowntime(0)  # None on failure
            return value

        try:  # bounded: seen hanging in the lab, which stopped the whole loop
            got = self._bounded("the downtime limit", set_and_read, SAMPLE_TIMEOUT_S)
        except libvirt.libvirtError as exc:
            raise VmferryError(f"cannot set the downtime limit: {exc.get_error_message()}") from exc
        if got is None:
            why = libvirt.virGetLastErrorMessage() or "libvirt gave no value"
            raise VmferryError(f"cannot read the downtime limit back: {why}")
        return int(got)

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
            self._bounded("the switch to post-copy", lambda: self._dom.migrateStartPostCopy(0),
                          SAMPLE_TIMEOUT_S)  # fmt: skip
        except libvirt.libvirtError as exc:
            raise VmferryError(f"cannot switch to post-copy: {exc.get_error_message()}") from exc
        self._postcopy = True

    def abort(self) -> None:
        """Abort the migration; the source keeps running. Harmless if it already ended.

        libvirt refuses an abort that comes before its migration job began (right after
        :meth:`start`); the abort then stays pending (:attr:`abort_pending`) and must be
        sent again while the migration runs.
        """
        try:
            self._bounded("the abort", self._dom.abortJob, SAMPLE_TIMEOUT_S)
        except libvirt.libvirtError:
            self._abort_pending = not self.done()
        except VmferryError:  # no answer on this connection: the engine tries a new one
            self._abort_pending = not self.done()
            self.abort_unanswered = True
        else:
            self._abort_pending = False

    @property
    def abort_pending(self) -> bool:
        """An abort was asked for but libvirt has not taken it yet."""
        return self._abort_pending

    def yank_links(self) -> list[str]:
        """Force-close the network connections this migration's QEMU still holds (QMP
        ``yank``); what was closed, by name (nothing when none is left).

        For a migration that was aborted but does not end: libvirt's abort cancels the disk
        mirror, which then waits for its writes in flight over NBD; with the destination cut
        off, TCP retries them for many minutes. Closing the NBD connection fails those
        writes, the mirror ends and libvirt's migrate call returns, the VM still running on
        its own disks."""
        found = self._qmp_any("query-yank", None)
        targets = yank_targets(found if isinstance(found, list) else [])
        if targets:
            self._qmp_any("yank", {"instances": targets})
        return [str(t.get("node-name", t["type"])) for t in targets]

    def _qmp(self, command: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        result = self._qmp_any(command, arguments)
        return result if isinstance(result, dict) else {}

    def _qmp_any(self, command: str, arguments: dict[str, Any] | None) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        try:  # bounded: a monitor call through libvirt was seen hanging for the whole move
            text = self._bounded(
                f"QEMU monitor {command}",
                lambda: libvirt_qemu.qemuMonitorCommand(self._dom, json.dumps(message), 0),
                SAMPLE_TIMEOUT_S,
            )
            reply = json.loads(text)
        except libvirt.libvirtError as exc:
            raise VmferryError(f"QEMU monitor {command}: {exc.get_error_message()}") from exc
        if "error" in reply:
            raise VmferryError(f"QEMU monitor {command}: {reply['error'].get('desc')}")
        return reply.get("return", {})


MIGRATION_NODE_PREFIX = "migration-"  # libvirt's NBD nodes for disks it copies


def yank_targets(instances: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Of the instances QEMU's ``query-yank`` lists, those that belong to an outgoing
    migration: the migration stream and the NBD block nodes libvirt added to copy disks
    (``migration-vda-storage``). Never a chardev (the monitor, the guest agent's channel) nor
    any other block node (the VM's own disks)."""
    chosen: list[dict[str, str]] = []
    for instance in instances:
        kind = instance.get("type")
        node = instance.get("node-name")
        if kind == "migration":
            chosen.append({"type": "migration"})
        elif (kind == "block-node" and isinstance(node, str)
              and node.startswith(MIGRATION_NODE_PREFIX)):  # fmt: skip
            chosen.append({"type": "block-node", "node-name": node})
    return chosen


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
