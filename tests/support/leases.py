"""Owners of jobs for the tests: a vmferry that was killed."""

from __future__ import annotations

import secrets
import socket
import subprocess

from vmferry.drivers.processes import start_ticks
from vmferry.model.lease import Lease
from vmferry.service.lease import this_node
from vmferry.store import Store


def dead_owner_lease(store: Store, lease_s: float = 15) -> Lease:
    """A current lease, on this machine, of a process that ran and was reaped: a vmferry that
    was killed (on this machine its death is seen at once, before the lease expires)."""
    child = subprocess.Popen(["sleep", "60"])
    ticks = start_ticks(child.pid)
    child.kill()
    child.wait()
    assert ticks is not None and start_ticks(child.pid) is None
    return store.take_lease(secrets.token_hex(8), host=socket.gethostname(), node=this_node(),
                            pid=child.pid, start_ticks=ticks, lease_s=lease_s)  # fmt: skip
