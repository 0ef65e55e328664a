"""The FastAPI application: ``create_app(store)``.

Data flow of a request: the body-size limit (413) -> the audit trail's middleware (it
writes the row when the answer starts) -> the route: ``Authorization: Bearer`` (401),
the role rule (403, naming the rule), the body and parameters (422, with each field's
path) -> the service layer and the store -> the answer; vmferry's errors become one JSON
line (404, 409, 422, 502) and anything unexpected a 500 without a traceback.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI

from vmferry import __version__
from vmferry.server.audit import AuditTrail
from vmferry.server.context import InventorySource, ServerContext
from vmferry.server.errors import install_error_handlers
from vmferry.server.moves import MigrateFn, Mover, MoveStarter, QueuedMoves
from vmferry.server.routers import audit, hosts, jobs, migrations, users, vms
from vmferry.server.schemas import Problem
from vmferry.service.fleet import fleet_inventory
from vmferry.store.db import Store

__all__ = ["API_PREFIX", "MAX_BODY_BYTES", "create_app"]

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 1024 * 1024
COMMON_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "no valid token"},
    403: {"model": Problem, "description": "a role rule refused: `rule` names it"},
    500: {"model": Problem, "description": "an unexpected error (one line, no traceback)"},
}


def create_app(
    store: Store,
    *,
    inventory: InventorySource = fleet_inventory,
    migrate: MigrateFn | None = None,
    mover: Mover | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    event_poll_s: float = 0.5,
    start_wait_s: float = 180,
) -> FastAPI:
    """The API over ``store``; ``inventory`` reads the hosts' VMs (libvirt by default).

    Moves: ``mover`` if given; else ``migrate`` (default
    :func:`vmferry.service.migrate.migrate`) in threads of this process with SQLite or when
    ``migrate`` is given; else, with PostgreSQL, queued for `vmferry worker` processes."""
    app = FastAPI(
        title="vmferry",
        version=__version__,
        summary="Move virtual machines into and between KVM hosts.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        max_body_size=max_body_bytes,
    )
    if mover is not None:
        moves = mover
    elif migrate is not None:
        moves = MoveStarter(store, migrate, start_wait_s=start_wait_s)
    elif store.engine.dialect.name == "sqlite":
        from vmferry.service.migrate import migrate as service_migrate

        moves = MoveStarter(store, service_migrate, start_wait_s=start_wait_s)
    else:
        moves = QueuedMoves(store, _locator(store))
    jobs_in_process = isinstance(moves, MoveStarter)
    app.state.vmferry = ServerContext(store, inventory, event_poll_s, jobs_in_process, moves)
    install_error_handlers(app)
    app.add_middleware(AuditTrail, store=store)
    api = APIRouter(prefix=API_PREFIX, responses=COMMON_RESPONSES)
    for module in (hosts, vms, jobs, migrations, audit, users):
        api.include_router(module.router)
    app.include_router(api)
    _errors_as_json(app)
    return app


def _locator(store: Store) -> Callable[[str], str]:
    """The host a VM runs on (libvirt asked; :class:`NotFoundError` when none has it)."""

    def locate(vm: str) -> str:
        from vmferry.service.locate import locate_vm

        host, _record = locate_vm(vm, store.list_hosts())
        return host.name

    return locate


def json_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every error answer (4xx, 5xx) documented as application/json: FastAPI
    documents them in the route's own media type (text/event-stream for the job events),
    but errors are always JSON. Pure: returns a changed copy."""
    fixed = copy.deepcopy(schema)
    for operations in fixed.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if str(status)[0] not in "45" or not content or "application/json" in content:
                    continue
                schemas = [c.get("schema") for c in content.values() if c.get("schema")]
                response["content"] = {"application/json": {"schema": schemas[0]} if schemas
                                       else {}}  # fmt: skip
    return fixed


def _errors_as_json(app: FastAPI) -> None:
    made = FastAPI.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = json_errors(made(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
