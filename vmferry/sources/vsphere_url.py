"""``vsphere://USER@HOST[:PORT]``: the address `vmferry sources add` takes, checked before
anything connects. The password is never part of it (docs/vsphere.md)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from vmferry.errors import BadInputError
from vmferry.model.vsphere import PASSWORD_ENV

__all__ = ["DEFAULT_PORT", "VsphereAddress", "parse_vsphere_url"]

DEFAULT_PORT = 443
_FORM = "vsphere://USER@HOST[:PORT]"


@dataclass(frozen=True)
class VsphereAddress:
    """Who connects where: the user name (it may hold an @, as in
    administrator@vsphere.local), the host name or address and the HTTPS port."""

    user: str
    host: str
    port: int


def parse_vsphere_url(url: str) -> VsphereAddress:
    """The parts of ``url``; :class:`BadInputError` naming the form when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadInputError(f"{url!r} is not a vSphere URL ({exc}); use {_FORM}") from exc
    if parts.scheme != "vsphere":
        raise BadInputError(f"{url!r} is not a vSphere URL; use {_FORM}")
    if parts.password is not None:
        raise BadInputError(
            f"{url!r} holds a password: vmferry never takes one on the command line; "
            f"set {PASSWORD_ENV} or answer the prompt"
        )
    if not parts.username or not parts.hostname:
        raise BadInputError(f"{url!r} needs a user and a host: use {_FORM}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadInputError(f"{url!r} has more than a user, host and port: use {_FORM}")
    if port == 0:
        raise BadInputError(f"{url!r}: port 0 is not a port; use {_FORM}")
    return VsphereAddress(unquote(parts.username), parts.hostname,
                          DEFAULT_PORT if port is None else port)  # fmt: skip
