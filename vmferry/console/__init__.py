"""The web console `vmferry server` serves at ``/``: server-rendered pages (Jinja2) with a
little JavaScript (htmx, uPlot), everything shipped in the package.

``mount_console(app)`` adds its routes, its static files and its login redirect to the
API's application (:func:`vmferry.server.app.create_app`). Its pages read and act through
what the API uses: the server's context (store, inventory, moves), its injected services,
the role rules (:func:`vmferry.server.roles.decide`) and the audit trail's middleware.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from vmferry.console.facts import CachedFacts, HostFactsFn, libvirt_facts
from vmferry.console.session import LoginRequired, secure_headers

__all__ = ["ConsoleConfig", "mount_console"]

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ConsoleConfig:
    """What the console reads beyond the API's context: the hosts' facts."""

    host_facts: HostFactsFn


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    from urllib.parse import urlencode

    target = "/login" + (f"?{urlencode({'next': exc.next_path})}" if exc.next_path != "/"
                         else "")  # fmt: skip
    return secure_headers(RedirectResponse(target, status_code=303))


async def _problem(request: Request, exc: Exception) -> Response:
    from vmferry.console.routes import ConsoleProblem, render, signed_in_or_none

    assert isinstance(exc, ConsoleProblem)
    session = await signed_in_or_none(request)
    return render(request, "error.html", session, exc.status, problem=exc, title=exc.title)


def mount_console(app: FastAPI, *, host_facts: HostFactsFn | None = None) -> None:
    """Serve the console on ``app`` (at ``/``, static files under ``/static``)."""
    from vmferry.console.routes import ConsoleProblem, router

    app.state.vmferry_console = ConsoleConfig(host_facts or CachedFacts(libvirt_facts))
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(ConsoleProblem, _problem)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(router)
