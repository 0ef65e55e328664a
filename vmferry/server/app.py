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
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vmferry import __version__
from vmferry.server.actions import Services, default_services
from vmferry.server.audit import AuditTrail
from vmferry.server.context import ChooseFn, InventorySource, ServerContext
from vmferry.server.errors import install_error_handlers
from vmferry.server.inventory_cache import CachedInventory
from vmferry.server.moves import MigrateFn, Mover, MoveStarter, QueuedMoves
from vmferry.server.routers import (
    audit,
    checks,
    hosts,
    imports,
    jobs,
    migrations,
    netprofiles,
    plans,
    predictions,
    profiles,
    users,
    vms,
)
from vmferry.server.schemas import Problem
from vmferry.service.fleet import fleet_inventory
from vmferry.store.db import Store

if TYPE_CHECKING:
    from vmferry.console.facts import HostFactsFn

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
    inventory_ttl_s: float = 5.0,
    migrate: MigrateFn | None = None,
    mover: Mover | None = None,
    choose: ChooseFn | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    event_poll_s: float = 0.5,
    start_wait_s: float = 180,
    services: Services | None = None,
    console: bool = True,
    host_facts: HostFactsFn | None = None,
) -> FastAPI:
    """The API over ``store``; ``inventory`` reads the hosts' VMs (libvirt by default,
    remembered ``inventory_ttl_s`` seconds: :mod:`vmferry.server.inventory_cache`).

    Moves: ``mover`` if given; else ``migrate`` (default
    :func:`vmferry.service.migrate.migrate`) in threads of this process with SQLite or when
    ``migrate`` is given; else, with PostgreSQL, queued for `vmferry worker` processes.

    ``console``: serve the web console at ``/`` (:mod:`vmferry.console`; ``host_facts``
    reads the hosts' capacity for its fleet page, libvirt by default)."""
    app = FastAPI(
        title="vmferry",
        version=__version__,
        summary="Move virtual machines into and between KVM hosts.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
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
    if inventory is fleet_inventory and inventory_ttl_s > 0:
        inventory = CachedInventory(fleet_inventory, inventory_ttl_s)
    app.state.vmferry = ServerContext(store, inventory, event_poll_s, jobs_in_process, moves,
                                      choose)  # fmt: skip
    app.state.vmferry_services = services or default_services(start_wait_s)
    install_error_handlers(app)
    app.add_middleware(AuditTrail, store=store)
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes)  # outside the audit trail
    api = APIRouter(prefix=API_PREFIX, responses=COMMON_RESPONSES)
    for module in (hosts, vms, jobs, migrations, audit, users):
        api.include_router(module.router)
    for module in (checks, predictions, profiles, plans, netprofiles, imports):  # actions
        api.include_router(module.router)
    app.include_router(api)
    if console:
        from vmferry.console import mount_console

        mount_console(app, host_facts=host_facts)
    _errors_as_json(app)
    return app


def _locator(store: Store) -> Callable[[str], str]:
    """The host a VM runs on (libvirt asked; :class:`NotFoundError` when none has it)."""

    def locate(vm: str) -> str:
        from vmferry.service.locate import locate_vm

        host, _record = locate_vm(vm, store.list_hosts())
        return host.name

    return locate


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the {limit}-byte limit")


class BodyLimit:
    """ASGI middleware: a body over ``max_body_bytes`` (declared in Content-Length, or
    streamed) is a 413 with a JSON line, before the token is read (no audit row). FastAPI's
    own limit answers in text/plain, which the schema does not document."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            too_large = _TooLarge(self.limit)
            await JSONResponse({"detail": too_large.detail}, status_code=413)(scope, receive,
                                                                              send)  # fmt: skip
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)  # the route's handler answers it as JSON
            return message

        await self.app(scope, limited, send)


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
