"""`vmferry worker`: run the moves `vmferry server` queues on PostgreSQL (procrastinate;
:mod:`vmferry.service.queue` has the data flow)."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable

import typer

from vmferry.errors import BadInputError

_QUEUES = typer.Option(
    [], "--queue", "-q",
    help="Queue to take moves from (repeat for several; default: vmferry). A worker per site "
    "or host group: give each its queue, and name it in POST /migrations.",
)  # fmt: skip


def worker(
    queue: list[str] = _QUEUES,
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=64,
                                    help="Moves this worker runs at once."),
    name: str | None = typer.Option(None, "--name",
                                    help="Name in the jobs' events and the audit trail "
                                    "(default: HOST-PID)."),
    stop_timeout_s: float = typer.Option(
        30, "--stop-timeout", min=0,
        help="On SIGTERM or Ctrl-C, seconds to let running moves finish before they are "
        "cancelled (the source keeps running).",
    ),
) -> None:  # fmt: skip
    """Run queued moves (the store VMFERRY_DB names must be PostgreSQL)."""
    from vmferry.service import queue as job_queue
    from vmferry.store.db import act_as, open_store

    queues = queue or [job_queue.DEFAULT_QUEUE]
    for one in queues:
        if not one or len(one) > 63:
            raise BadInputError(f"--queue {one!r}: give a name of 1 to 63 characters")
    who = name or f"{socket.gethostname()}-{os.getpid()}"
    store = open_store()
    sync_app = job_queue.build_app(job_queue.store_url(store), worker=False)  # SQLite: exit 2
    act_as(f"worker:{who}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)  # fmt: skip
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    with sync_app.open():
        job_queue.ensure_schema(store, sync_app)
    sys.stderr.write(f"vmferry worker {who}: queues {', '.join(queues)}, {concurrency} moves "
                     f"at once, store {store.url}\n")  # fmt: skip
    sys.stderr.flush()
    try:
        job_queue.run_worker(store, queues=queues, concurrency=concurrency, name=who,
                             stop_timeout_s=stop_timeout_s, tasks=_server_tasks())  # fmt: skip
    finally:
        store.close()


def _server_tasks() -> dict[str, Callable[..., object]]:
    """The tasks the server's routers define (imports), for this worker to run."""
    from vmferry.server.routers.imports import RUN_IMPORT, run_queued_import

    return {RUN_IMPORT: run_queued_import}
