"""Whether the command line runs in remote mode, and which commands have a remote form.

Remote mode is on when VMFERRY_URL is set. A command then runs through the server when it
is in :data:`REMOTE_FORMS` (one line each: the command and the request that serves it),
runs locally when it is in :data:`LOCAL_ALWAYS`, and is otherwise refused in one line
(exit 2): it never runs against a local store while the user asked for a server.

This module imports only the standard library: every command module imports it, and the
local path's import cost stays as it was. :mod:`vmferry.client.api` (httpx) is imported by
:func:`remote_api`, only in remote mode.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from vmferry.errors import NoRemoteFormError

if TYPE_CHECKING:
    from vmferry.client.api import ApiClient

__all__ = [
    "LOCAL_ALWAYS",
    "REMOTE_FORMS",
    "TOKEN_ENV",
    "URL_ENV",
    "command_path",
    "gate",
    "remote_api",
    "remote_url",
]

URL_ENV = "VMFERRY_URL"
TOKEN_ENV = "VMFERRY_TOKEN"

# A command (as typed: "job show") and the request that serves it in remote mode. A
# command's module branches on remote_api() and prints what the local command prints.
REMOTE_FORMS: dict[str, str] = {
    "hosts list": "GET /api/v1/hosts",
    "inventory": "GET /api/v1/vms",
    "jobs": "GET /api/v1/jobs",
    "job show": "GET /api/v1/jobs/{id}",
    "job cancel": "POST /api/v1/jobs/{id}/cancel, then GET /api/v1/jobs/{id}",
    "audit": "GET /api/v1/audit",
    "users list": "GET /api/v1/users",
    "migrate": "POST /api/v1/migrations, then GET /api/v1/jobs/{id}/events",
    "job resume": "POST /api/v1/jobs/{id}/resume",
    "check": "POST /api/v1/checks (text: GET /api/v1/vms/{id} for the source host)",
    "predict": "POST /api/v1/predictions (text: GET /api/v1/vms/{id} for the source host)",
    "profile": "POST /api/v1/profiles (--host: POST /api/v1/hosts/{name}/profiles), then "
    "GET /api/v1/vms/{id}/profile until it ends",
    "plan create": "POST /api/v1/plans (the plan file's YAML, read here)",
    "plan show": "GET /api/v1/plans/{id} (--gantt: GET /api/v1/plans/{id}/gantt)",
    "plan run": "POST /api/v1/plans/{id}/run, then GET /api/v1/plans/{id} until it stops",
    "plan resume": "POST /api/v1/plans/{id}/resume, then GET /api/v1/plans/{id} until it stops",
    "plan pause": "POST /api/v1/plans/{id}/pause",
    "plan cancel": "POST /api/v1/plans/{id}/cancel",
    "netprofile list": "GET /api/v1/netprofiles",
    "netprofile show": "GET /api/v1/netprofiles/{name}",
    "netprofile define": "PUT /api/v1/netprofiles/{name}",
    "netprofile remove": "DELETE /api/v1/netprofiles/{name} "
    "(--host: DELETE /api/v1/hosts/{host}/netprofiles/{name})",
    "netprofile apply": "PUT /api/v1/hosts/{host}/netprofiles/{name}",
    "netprofile capture": "POST /api/v1/vms/{id}/netprofiles/capture",
    "import": "POST /api/v1/imports (the server's paths), then GET /api/v1/jobs/{id}/events",
}

# Commands that run on this machine even in remote mode, and why.
LOCAL_ALWAYS: dict[str, str] = {
    "lab": "the lab is this machine's",
    "demo": "the demo runs on this machine's lab",
    "server": "it is the server",
    "worker": "a worker runs beside the server, on its store",
    "users add": "bootstrap: the first token comes from the store, before any server answers",
}


def remote_url() -> str | None:
    """VMFERRY_URL, or None: local mode."""
    url = os.environ.get(URL_ENV, "").strip()
    return url or None


def command_path(args: Sequence[str], groups: Collection[str]) -> str | None:
    """The command ``args`` runs: its first word that is no option, and for a group of
    subcommands (``groups``) the word after it ("job show"); None without a command."""
    for index, arg in enumerate(args):
        if arg.startswith("-"):
            continue
        if arg not in groups:
            return arg
        sub = args[index + 1] if index + 1 < len(args) else None
        return arg if sub is None or sub.startswith("-") else f"{arg} {sub}"
    return None


def gate(args: Sequence[str], groups: Collection[str]) -> None:
    """In remote mode, refuse (:class:`NoRemoteFormError`, exit 2) a command that has no
    remote form and is not one that always runs locally. Help is always shown."""
    if remote_url() is None or "--help" in args:
        return
    path = command_path(args, groups)
    if path is None or path in groups:  # no command, or a group without one: the help
        return
    if path in REMOTE_FORMS or path in LOCAL_ALWAYS or path.split()[0] in LOCAL_ALWAYS:
        return
    raise NoRemoteFormError(
        f"`vmferry {path}` has no remote form yet; unset {URL_ENV} to run it locally"
    )


def remote_api() -> ApiClient | None:
    """A client of the server at VMFERRY_URL, or None in local mode."""
    if remote_url() is None:
        return None
    from vmferry.client.api import ApiClient

    return ApiClient.from_env()
