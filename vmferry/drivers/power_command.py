"""A host powered off, on or asked through its power driver: the ``command`` driver here
(commands its admin chose, ``ipmitool -I lanplus -H BMC -U admin -E chassis power off``, the
lab's `vmferry lab host power`, run without a shell, each with a time limit), the
``redfish`` driver in :mod:`vmferry.drivers.power_redfish`."""

from __future__ import annotations

import re
import shlex

from vmferry.drivers.power_redfish import redfish_off, redfish_on, redfish_status
from vmferry.drivers.process import run_tool
from vmferry.errors import ToolError
from vmferry.model.ha import HostPower

__all__ = ["power_off", "power_on", "power_status"]

_STATE = re.compile(r"\b(on|off)\b")


def _run(command: str, timeout_s: float) -> str:
    return run_tool(shlex.split(command), timeout_s=timeout_s).stdout


def power_off(power: HostPower) -> None:
    """Power the host off; :class:`ToolError` when the command (or the BMC) fails."""
    if power.driver == "redfish":
        return redfish_off(power)
    _run(power.off_command, power.timeout_s)


def power_on(power: HostPower) -> None:
    if power.driver == "redfish":
        return redfish_on(power)
    _run(power.on_command, power.timeout_s)


def power_status(power: HostPower) -> str:
    """``on`` or ``off`` as the status command prints it (its last such word: ipmitool says
    "Chassis Power is off"); :class:`ToolError` when it fails or says neither."""
    if power.driver == "redfish":
        return redfish_status(power)
    found = _STATE.findall(_run(power.status_command, power.timeout_s).lower())
    if not found:
        raise ToolError(f"`{power.status_command}` printed neither 'on' nor 'off'")
    return str(found[-1])
