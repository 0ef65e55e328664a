"""This vmferry process's lease: taken the first time it drives a job or a plan run, renewed
by a background heartbeat, released when the process exits (see :mod:`vmferry.model.lease`).

One lease per process and database: a plan run and the migrations it runs in threads share
it. A process that is killed leaves its lease to expire; others then reconcile its jobs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from vmferry.drivers.processes import is_same_process, start_ticks
from vmferry.errors import VmferryError
from vmferry.model.lease import Lease, OwnerState, heartbeat_interval_s, owner_state
from vmferry.model.migration import Job
from vmferry.service.settings import owner_lease_s
from vmferry.store.db import Store

__all__ = ["owner_alive", "owner_of", "owner_of_job", "process_lease", "this_node"]


def this_node() -> str:
    """Where a pid names one process: this kernel's boot and this pid namespace."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{boot}/{os.readlink('/proc/self/ns/pid')}"


@dataclass
class _Held:
    lease: Lease
    stop: threading.Event
    thread: threading.Thread


_held: dict[str, _Held] = {}
_lock = threading.Lock()


def process_lease(store: Store) -> Lease:
    """This process's lease in ``store``'s database, taken (and its heartbeat started) on
    the first call."""
    key = store.url
    with _lock:
        held = _held.get(key)
        if held is not None:
            return held.lease
        lease_s = owner_lease_s(store)
        pid = os.getpid()
        lease = store.take_lease(secrets.token_hex(8), host=socket.gethostname(),
                                 node=this_node(), pid=pid, start_ticks=start_ticks(pid),
                                 lease_s=lease_s)  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=_heartbeat, args=(store.twin(), lease, lease_s, stop),
                                  name="vmferry-lease", daemon=True)  # fmt: skip
        _held[key] = _Held(lease, stop, thread)
        thread.start()
        if len(_held) == 1:
            atexit.register(_release_all)
        return lease


def _heartbeat(store: Store, lease: Lease, lease_s: float, stop: threading.Event) -> None:
    """Renew until told to stop; a store that does not answer is tried again next time (the
    lease lasts three renewals)."""
    while not stop.wait(heartbeat_interval_s(lease_s)):
        with contextlib.suppress(SQLAlchemyError, VmferryError):
            if store.renew_lease(lease.owner_id, lease_s) is None:  # removed by hand
                store.take_lease(lease.owner_id, host=lease.host, node=lease.node,
                                 pid=lease.pid, start_ticks=lease.start_ticks,
                                 lease_s=lease_s)  # fmt: skip
    with contextlib.suppress(SQLAlchemyError, VmferryError):
        store.release_lease(lease.owner_id)
    store.close()


def _release_all() -> None:
    with _lock:
        held = list(_held.values())
        _held.clear()
    for one in held:
        one.stop.set()
    for one in held:
        one.thread.join(timeout=5)


def owner_of(store: Store, owner_id: str | None, pid: int | None, ticks: int | None) -> OwnerState:
    """Whether the owner recorded for a job or plan run (its lease, or for one recorded
    before leases its pid and start time) still drives it."""
    if owner_id is None:
        if pid is None:
            return OwnerState(False, "no vmferry process owns it")
        alive = _runs(pid, ticks)
        return OwnerState(alive, f"vmferry pid {pid} {'runs' if alive else 'is gone'}")
    lease = store.lease(owner_id)
    node = this_node()
    process = None
    if lease is not None and lease.node == node:
        process = _runs(lease.pid, lease.start_ticks)
    return owner_state(lease, store.clock(), node, process)


def owner_of_job(store: Store, job: Job) -> OwnerState:
    """Who drives ``job`` and whether it still does, with a line saying so."""
    return owner_of(store, job.owner_id, job.owner_pid, job.owner_start_ticks)


def owner_alive(store: Store, job: Job) -> bool:
    """Whether a vmferry process still drives ``job``: its owner's lease is current (and, on
    this machine, its process runs). A job without an owner counts as orphaned."""
    return owner_of_job(store, job).alive


def _runs(pid: int, ticks: int | None) -> bool:
    if ticks:
        return is_same_process(pid, ticks)
    now = start_ticks(pid)
    return now is not None and is_same_process(pid, now)
