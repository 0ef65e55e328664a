"""Bound the source's send queue for a live move, and put it back after
(:mod:`vmferry.engine.send_queue` says why and decides; this module reads and writes the
sysctl through the host's shell and records each change as a ``setting`` event).

A host without a shell (``vmferry hosts add --shell``) is left as it is: vmferry runs
nothing there. A change that fails is a ``note``; it never stops a move, nor holds it up
for more than :data:`TIMEOUT_S` per command (a host cut off mid-move).
"""

from __future__ import annotations

from vmferry.drivers import sysctl
from vmferry.drivers.host_exec import HostExec
from vmferry.engine.live import NoteFn
from vmferry.engine.send_queue import SYSCTL, SendQueue, restore_to, tune_to
from vmferry.errors import VmferryError
from vmferry.model import Host
from vmferry.store.db import Store

__all__ = ["TIMEOUT_S", "bound_send_queue", "restore_send_queue"]

TIMEOUT_S = 5.0


def _note(store: Store, job_id: str, message: str) -> None:
    store.add_event(job_id, "note", message, {})


def bound_send_queue(source: Host, store: Store, job_id: str, note: NoteFn) -> SendQueue | None:
    """Bound the unsent bytes of the source's sockets for the move; the change made, or
    None (nothing to change, no shell, or it failed: then a note)."""
    shell = HostExec.for_shell(source.name, source.shell)
    if shell is None:
        return None
    try:
        current = sysctl.read_int(shell, SYSCTL, TIMEOUT_S)
        wanted = tune_to(current)
        if wanted is None:
            return None
        sysctl.write(shell, SYSCTL, wanted, TIMEOUT_S)
    except VmferryError as exc:
        _note(store, job_id, f"send queue of {source.name} not bounded: {exc.message}")
        return None
    change = SendQueue(source.name, current, wanted)
    message = (f"send queue of {source.name} bounded for the move: {SYSCTL} {current} -> "
               f"{wanted} (the guest's pause waits for what the socket still holds)")  # fmt: skip
    data = {"host": source.name, "sysctl": SYSCTL, "was": current, "now": wanted}
    store.add_event(job_id, "setting", message, data)
    note(message)
    return change


def restore_send_queue(change: SendQueue, source: Host, store: Store, job_id: str) -> None:
    """Put the sysctl back, unless another move from the host runs or it was changed since
    (then it is left, and the event says so); never raises."""
    shell = HostExec.for_shell(source.name, source.shell)
    if shell is None:
        return
    others = any(j.id != job_id and j.kind == "migrate" and j.source == source.name
                 for j in store.unfinished_jobs())  # fmt: skip
    try:
        current = sysctl.read_int(shell, SYSCTL, TIMEOUT_S)
        back = restore_to(change, current, others)
        if back is None:
            why = ("another move from it runs" if others
                   else f"it was changed to {current} meanwhile")  # fmt: skip
            data = {"host": source.name, "sysctl": SYSCTL, "now": current}
            message = f"send queue of {source.name} left at {current}: {why}"
            store.add_event(job_id, "setting", message, data)
            return
        sysctl.write(shell, SYSCTL, back, TIMEOUT_S)
    except VmferryError as exc:
        _note(store, job_id, f"send queue of {source.name} not restored to {change.was}: "
              f"{exc.message}")  # fmt: skip
        return
    store.add_event(job_id, "setting", f"send queue of {source.name} restored: {SYSCTL} {back}",
                    {"host": source.name, "sysctl": SYSCTL, "now": back})  # fmt: skip
