"""The moments a VM paused on its source and resumed on its destination, from libvirt's
lifecycle events, on vmferry's own clock.

QEMU tells libvirt when it stops and starts the guest's vCPUs (its ``STOP`` and ``RESUME``
events); libvirt forwards them to every connection that listens as ``SUSPENDED`` and
``RESUMED`` lifecycle events. A watcher holds its own connection to each host and stamps the
events with ``time.monotonic()`` as they arrive, so the two hosts' clocks never meet: the pause
is the time between the source's suspension and the destination's resumption as vmferry saw
them, late by the events' delivery (a few ms), never by a clock offset.

libvirt needs its event loop registered before a connection that listens is opened; the loop
runs in one daemon thread for the process.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import VmferryError
from vmferry.model import Host

_loop_lock = threading.Lock()
_loop_started = False

# the lifecycle events of a move: the source pauses the guest for the switchover (or for
# post-copy), the destination lets it run
_PAUSED = {
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY),
}
_RESUMED = {
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED),
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY),
}


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread, once."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_loop, name="libvirt-events", daemon=True)
        thread.start()
        _loop_started = True


def _run_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


@dataclass(frozen=True)
class PauseTimes:
    """When the guest paused on its source and resumed on its destination, two ways:

    - ``paused_at``/``resumed_at``: libvirt's lifecycle events as they reached vmferry
      (``time.monotonic()``), late by their delivery;
    - ``qemu_stop_at``/``qemu_resume_at``: QEMU's own ``STOP`` and ``RESUME`` events, stamped
      by each QEMU with its host's clock (s since the epoch) as the vCPUs stop and start:
      exact on each host, comparable across hosts as far as their clocks agree.

    None where an event did not arrive."""

    paused_at: float | None
    resumed_at: float | None
    qemu_stop_at: float | None = None
    qemu_resume_at: float | None = None

    @property
    def pause_ms(self) -> int | None:
        """From libvirt's events (vmferry's clock)."""
        return _span_ms(self.paused_at, self.resumed_at)

    @property
    def qemu_pause_ms(self) -> int | None:
        """From QEMU's own stamps (the hosts' clocks)."""
        return _span_ms(self.qemu_stop_at, self.qemu_resume_at)


def _span_ms(start: float | None, end: float | None) -> int | None:
    if start is None or end is None or end < start:
        return None
    return round((end - start) * 1000)


class PauseWatch:
    """Listens on both hosts for ``vm``'s pause and resume during one move."""

    def __init__(self, vm: str, source: Host, destination: Host,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.vm = vm
        self.hosts = (source, destination)
        self.clock = clock
        self._listening: list[tuple[LibvirtHost, int, bool]] = []  # (host, id, a QMP one)
        self._paused: float | None = None
        self._resumed: float | None = None
        self._qemu_stop: float | None = None
        self._qemu_resume: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Listen on both hosts (raises :class:`HostUnreachableError` when one cannot be
        reached: the caller goes on without the measurement)."""
        ensure_event_loop()
        qmp = {"source": "STOP", "destination": "RESUME"}
        for role, host in zip(("source", "destination"), self.hosts, strict=True):
            conn = LibvirtHost.connect(host.name, host.uri, own=True)
            try:
                lifecycle = conn.listen_lifecycle(functools.partial(self._on_event, role))
                self._listening.append((conn, lifecycle, False))
                stamped = conn.listen_qemu_event(qmp[role], functools.partial(self._on_qmp, role))
                self._listening.append((conn, stamped, True))
            except VmferryError:
                self.stop()
                conn.close()
                raise

    def _on_event(self, role: str, vm: str, event: int, detail: int) -> None:
        if vm != self.vm:
            return
        now = self.clock()
        with self._lock:
            if role == "source" and (event, detail) in _PAUSED and self._paused is None:
                self._paused = now
            elif role == "destination" and (event, detail) in _RESUMED and self._resumed is None:
                # the first: after post-copy the destination says RESUMED again when the
                # last page has arrived, seconds after the guest began to run there
                self._resumed = now

    def _on_qmp(self, role: str, vm: str, stamp: float) -> None:
        if vm != self.vm:
            return
        with self._lock:
            if role == "source" and self._qemu_stop is None:
                self._qemu_stop = stamp
            elif role == "destination" and self._qemu_resume is None:
                self._qemu_resume = stamp

    def stop(self) -> PauseTimes:
        """Stop listening; a resume can lag its migration's end by an event's delivery, so
        this waits up to half a second for one that has not come yet."""
        deadline = self.clock() + 0.5
        while self._paused is not None and self._resumed is None and self.clock() < deadline:
            time.sleep(0.02)
        closed: set[int] = set()
        for conn, callback_id, qmp in self._listening:
            if qmp:
                conn.stop_listening_qemu(callback_id)
            else:
                conn.stop_listening(callback_id)
        for conn, _, _ in self._listening:
            if id(conn) not in closed:
                closed.add(id(conn))
                conn.close()
        self._listening = []
        with self._lock:
            return PauseTimes(self._paused, self._resumed, self._qemu_stop, self._qemu_resume)
