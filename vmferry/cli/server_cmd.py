"""`vmferry server [--listen HOST:PORT]`: the REST API (docs/server.md) on uvicorn.

FastAPI and uvicorn are imported only here, when the server starts, so the other commands
(and `vmferry --help`) never load them.
"""

from __future__ import annotations

import socket
import sys

import typer

from vmferry.errors import BadInputError

DEFAULT_LISTEN = "127.0.0.1:8470"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6; port 0: any free port) -> (host, port);
    :class:`BadInputError` otherwise."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BadInputError(f"--listen {text!r}: give HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def server(
    listen: str = typer.Option(DEFAULT_LISTEN, "--listen", help="Address and port to serve on."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level."),
    inventory_ttl_s: float = typer.Option(
        5.0,
        "--inventory-ttl",
        min=0,
        help="Seconds the hosts' VM lists are reused by GET /vms (0: read them every time).",
    ),
) -> None:
    """Serve the REST API under /api/v1 (schema at /openapi.json, docs at /docs) on the
    store VMFERRY_DB names."""
    host, port = parse_listen(listen)
    import uvicorn

    from vmferry.server.app import create_app
    from vmferry.store.db import act_as, open_store

    store = open_store()
    act_as(f"server:{socket.gethostname()}")  # who the jobs' transitions name
    app = create_app(store, inventory_ttl_s=inventory_ttl_s)
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{shown}:{port}" if port else f"a free port of {shown} (named below)"
    sys.stderr.write(f"vmferry server: {where}, API under /api/v1, docs at /docs, store "
                     f"{store.url}\n")  # fmt: skip
    if app.state.vmferry.jobs_in_process:
        sys.stderr.write("vmferry server: the store is SQLite: jobs run in this process "
                         "(workers need PostgreSQL)\n")  # fmt: skip
    else:
        sys.stderr.write("vmferry server: the store is PostgreSQL: moves are queued for "
                         "`vmferry worker` processes\n")  # fmt: skip
    sys.stderr.flush()
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
    finally:
        close = getattr(app.state.vmferry.moves, "close", None)
        if close is not None:
            close()
        store.close()
