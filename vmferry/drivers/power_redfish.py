"""The ``redfish`` power driver: a host's BMC asked and told over Redfish (DMTF DSP0266), the
way a BMC is reached: HTTPS with basic authentication.

- status: ``GET`` the ComputerSystem resource; its ``PowerState`` ``Off`` is ``off``, any
  other (``On``, ``PoweringOn``, ``PoweringOff``) is ``on``: only a system that says it is
  off counts as fenced;
- off: ``POST`` ``{"ResetType": "ForceOff"}`` to the system's ``#ComputerSystem.Reset``
  action target (as the resource names it); on: ``{"ResetType": "On"}``.

The password is read from the environment variable the driver names, at each use: it is
never stored. Every failure (refused, timed out, TLS, 4xx/5xx, a reply that is not Redfish)
is one :class:`~vmferry.errors.ToolError` line.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx

from vmferry.errors import ToolError
from vmferry.model.ha import HostPower

__all__ = ["redfish_off", "redfish_on", "redfish_status"]

RESET = "#ComputerSystem.Reset"


def _client(power: HostPower) -> httpx.Client:
    if not power.url or not power.user or not power.password_env:
        raise ToolError(f"{power.host}: the redfish driver needs a URL, a user and a password "
                        "variable")  # fmt: skip
    password = os.environ.get(power.password_env)
    if password is None:
        raise ToolError(f"{power.host}: the BMC's password is not in ${power.password_env}")
    verify: bool | ssl.SSLContext = (
        False if power.insecure else ssl.create_default_context(cafile=power.ca)
    )
    return httpx.Client(auth=(power.user, password), verify=verify, timeout=power.timeout_s,
                        headers={"Accept": "application/json"})  # fmt: skip


def _json(power: HostPower, reply: httpx.Response) -> dict[str, Any]:
    if reply.status_code >= 400:
        asked = f"{reply.request.method} {reply.request.url.path}"
        raise ToolError(f"{power.host}: the BMC at {power.url} answered HTTP "
                        f"{reply.status_code} to {asked}")  # fmt: skip
    try:
        body = reply.json()
    except ValueError as exc:
        raise ToolError(f"{power.host}: the BMC at {power.url} did not answer JSON") from exc
    if not isinstance(body, dict):
        raise ToolError(f"{power.host}: the BMC at {power.url} did not answer a Redfish resource")
    return body


def _system(power: HostPower, client: httpx.Client) -> dict[str, Any]:
    assert power.url is not None
    return _json(power, client.get(power.url))


def _call(power: HostPower, what: str, request: Any) -> Any:
    """``request(client)`` with every transport failure as one ToolError line."""
    try:
        with _client(power) as client:
            return request(client)
    except httpx.HTTPError as exc:
        raise ToolError(f"{power.host}: the BMC at {power.url} could not be asked to "
                        f"{what}: {exc}") from exc  # fmt: skip


def redfish_status(power: HostPower) -> str:
    """``on`` or ``off`` (only ``PowerState: Off`` is off)."""
    system = _call(power, "say its power state", lambda c: _system(power, c))
    state = system.get("PowerState")
    if not isinstance(state, str):
        raise ToolError(f"{power.host}: the BMC at {power.url} gave no PowerState")
    return "off" if state == "Off" else "on"


def _reset(power: HostPower, reset_type: str) -> None:
    def send(client: httpx.Client) -> None:
        action = _system(power, client).get("Actions", {}).get(RESET, {})
        target = action.get("target") if isinstance(action, dict) else None
        if not isinstance(target, str):
            raise ToolError(f"{power.host}: the system at {power.url} offers no {RESET}")
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if isinstance(allowed, list) and reset_type not in allowed:
            raise ToolError(f"{power.host}: the BMC does not offer ResetType {reset_type} "
                            f"(it offers {', '.join(map(str, allowed))})")  # fmt: skip
        reply = client.post(httpx.URL(power.url or "").join(target), json={"ResetType": reset_type})
        if reply.status_code >= 400:
            _json(power, reply)  # raises with the status

    _call(power, f"reset the system ({reset_type})", send)


def redfish_off(power: HostPower) -> None:
    """A forced power-off (``ForceOff``: fencing does not wait for the guest OS)."""
    _reset(power, "ForceOff")


def redfish_on(power: HostPower) -> None:
    _reset(power, "On")
