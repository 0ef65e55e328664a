"""How errors reach a client: one JSON line, never a traceback.

vmferry's own errors keep their message (not found: 404, already exists: 409, other bad
input: 422, a host that does not answer: 502); a malformed request is 422 with each bad
field's path; anything unexpected is a 500 with one line (the traceback goes to the
server's log only).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vmferry.errors import (
    AlreadyExistsError,
    BadInputError,
    HostUnreachableError,
    InUseError,
    NotFoundError,
    VmferryError,
)

__all__ = ["Refused", "StartTimeout", "install_error_handlers", "status_of"]

log = logging.getLogger("vmferry.server")


class Refused(Exception):
    """A role rule refused the request (403, with the rule's name)."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule, self.reason = rule, reason


class StartTimeout(VmferryError):
    """A move started through the API runs, but its job did not appear in time (504)."""


def status_of(exc: VmferryError) -> int:
    """The HTTP status of one of vmferry's errors."""
    if isinstance(exc, StartTimeout):
        return 504
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, AlreadyExistsError | InUseError):
        return 409
    if isinstance(exc, HostUnreachableError):
        return 502
    if isinstance(exc, BadInputError):
        return 422
    return 500


def _path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(part) for part in loc)


async def _refused(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    return JSONResponse({"detail": exc.reason, "rule": exc.rule}, status_code=403)


async def _vmferry_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VmferryError)
    status = status_of(exc)
    line = exc.message.splitlines()[0]
    if status == 500:
        log.error("vmferry error: %s", exc.message)
    if status == 422:  # every 422 has one shape: a list of problems (here not one field's)
        problem = {"loc": [], "path": "", "msg": line, "type": "bad_input"}
        return JSONResponse({"detail": [problem]}, status_code=422)
    return JSONResponse({"detail": line}, status_code=status)


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "path": _path(e["loc"]), "msg": e["msg"],
               "type": e["type"]} for e in exc.errors()]  # fmt: skip
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = getattr(exc, "headers", None)
    if exc.status_code == 400:  # FastAPI's "error parsing the body" (not UTF-8, ...): malformed
        problem = {
            "loc": ["body"],
            "path": "body",
            "msg": str(exc.detail),
            "type": "body_unreadable",
        }
        return JSONResponse({"detail": [problem]}, status_code=422)
    return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=headers)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error", exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); the server's log has the details"},
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(VmferryError, _vmferry_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
