"""Start a move through the API: :func:`vmferry.service.migrate.migrate` runs in a
background thread of the server (with SQLite, jobs run in the server's process), and the
request returns as soon as the move's job exists.

The service makes the job itself, after its pre-flight checks (and after reconciling the
VM's earlier unfinished jobs), and does not hand its id out before the move ends; so the
job is found in the store: the VM's unfinished job owned by this process's lease that was
not there before. One start per VM at a time in this process (a lock), so that job is
this request's. A move that ends before it is seen (blocked by its checks) gives its job
id in its result; one that fails before making a job raises its error here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vmferry.errors import AlreadyExistsError
from vmferry.model.migration import Job, MigrationOptions, MigrationResult
from vmferry.server.errors import StartTimeout
from vmferry.service.lease import process_lease
from vmferry.store.db import Store

__all__ = ["MigrateFn", "MoveStarter"]

POLL_S = 0.05


class _Outcome(Protocol):
    @property
    def result(self) -> MigrationResult: ...


MigrateFn = Callable[[str, str, MigrationOptions], _Outcome]


@dataclass
class _Run:
    done: threading.Event = field(default_factory=threading.Event)
    job_id: str | None = None
    error: BaseException | None = None


class MoveStarter:
    """Starts moves in background threads and says which job each one made."""

    def __init__(self, store: Store, migrate: MigrateFn, *, start_wait_s: float = 180) -> None:
        self.store, self.migrate, self.start_wait_s = store, migrate, start_wait_s
        self._starting: set[str] = set()
        self._lock = threading.Lock()

    def start(self, vm: str, to: str, options: MigrationOptions) -> Job:
        """Start moving ``vm`` to ``to``; the move's job once it exists (it may have
        finished already: blocked by its checks)."""
        with self._lock:
            if vm in self._starting:
                raise AlreadyExistsError(f"a move of {vm} is being started through this "
                                         "server already; see GET /api/v1/jobs")  # fmt: skip
            self._starting.add(vm)
        try:
            return self._start(vm, to, options)
        finally:
            with self._lock:
                self._starting.discard(vm)

    def _start(self, vm: str, to: str, options: MigrationOptions) -> Job:
        owner = process_lease(self.store).owner_id
        before = {j.id for j in self.store.unfinished_jobs(vm)}
        run = _Run()

        def work() -> None:
            try:
                run.job_id = self.migrate(vm, to, options).result.job_id
            except BaseException as exc:  # handed to the request, or to the job's record
                run.error = exc
            finally:
                run.done.set()

        threading.Thread(target=work, name=f"vmferry-move-{vm}", daemon=True).start()
        deadline = time.monotonic() + self.start_wait_s
        while time.monotonic() < deadline:
            if run.done.wait(POLL_S):
                if run.error is not None:
                    raise run.error
                if run.job_id is not None:
                    return self.store.get_job(run.job_id)
            made = [j for j in self.store.unfinished_jobs(vm)
                    if j.owner_id == owner and j.id not in before]  # fmt: skip
            if made:
                return self.store.get_job(made[0].id)
        raise StartTimeout(f"the move of {vm} is starting but its job did not appear within "
                           f"{self.start_wait_s:g} s; see GET /api/v1/jobs")  # fmt: skip
