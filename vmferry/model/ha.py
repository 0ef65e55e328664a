"""HA restart: which VMs vmferry restarts elsewhere when their host dies, and how a host is
powered off (fenced) before that (docs/operations.md)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class HaPriority(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        return ("high", "medium", "low").index(self.value)


@dataclass(frozen=True)
class HaVm:
    """An HA-enabled VM, as the monitor last saw it: where it ran, and its definition (what
    is defined again on another host when its host dies)."""

    vm: str
    priority: HaPriority
    host: str
    definition_xml: str
    vcpus: int
    memory_bytes: int
    state: str = "protected"  # protected | restarted | failed
    note: str | None = None
    updated_at: str = ""


class PowerAutomation(enum.StrEnum):
    """Who may power a host on or off through its driver (vSphere DPM's per-host automation
    level). ``status`` is always allowed."""

    AUTOMATIC = "automatic"  # vmferry's own loops (`watch --power`, HA fencing) and people
    MANUAL = "manual"  # only a person's command: `host power`, `host wake`, `consolidate`
    DISABLED = "disabled"  # nobody through vmferry


def power_refusal(host: str, automation: PowerAutomation, action: str, *,
                  automatic: bool) -> str | None:  # fmt: skip
    """Why the power ``action`` (on, off, status) on ``host`` is refused by its automation
    level, in one line, or None when it may go ahead; ``automatic``: asked by one of
    vmferry's loops rather than by a person (pure)."""
    if action == "status" or automation is PowerAutomation.AUTOMATIC:
        return None
    if automation is PowerAutomation.DISABLED:
        return (f"{host}'s power automation is disabled: vmferry powers it neither on nor "
                f"off (`vmferry host power automation {host} manual|automatic`)")  # fmt: skip
    if automatic:
        return (f"{host}'s power automation is manual: only a person's command powers it "
                f"{action}, not vmferry's own loops (`vmferry host power automation {host} "
                "automatic`)")  # fmt: skip
    return None


@dataclass(frozen=True)
class HostPower:
    """How a host is powered off, on and asked. The ``command`` driver: commands vmferry
    runs (ipmitool, a Redfish client, or the lab's own), each exiting 0 on success, the
    status command printing ``on`` or ``off``. The ``redfish`` driver: vmferry speaks Redfish
    itself to the BMC's ComputerSystem at ``url`` (HTTPS, basic authentication as ``user``
    with the password in the environment variable ``password_env``; the BMC's certificate
    checked against ``ca``, the system's trust store when None, not at all if ``insecure``).
    ``automation``: who may use the driver (:class:`PowerAutomation`)."""

    host: str
    on_command: str = ""
    off_command: str = ""
    status_command: str = ""
    timeout_s: float = 60.0
    driver: str = "command"  # command | redfish
    url: str | None = None
    user: str | None = None
    password_env: str | None = None
    ca: str | None = None
    insecure: bool = False
    automation: PowerAutomation = PowerAutomation.AUTOMATIC

    def describe(self) -> str:
        """One line: which driver, and what it reaches."""
        if self.driver == "redfish":
            return f"redfish {self.url} as {self.user}"
        return f"commands (off: {self.off_command})"


_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def power_problem(power: HostPower) -> str | None:
    """Why ``power`` cannot be a host's power driver, in one line, or None (pure)."""
    if power.driver == "command":
        if power.url or power.user or power.password_env or power.ca or power.insecure:
            return "give commands (--on, --off, --status) or --redfish, not both"
        missing = [flag for flag, command in (("--on", power.on_command),
                   ("--off", power.off_command), ("--status", power.status_command))
                   if not command.strip()]  # fmt: skip
        if missing:
            return (f"the command driver needs {', '.join(missing)} (or --redfish URL for a "
                    "BMC's Redfish API)")  # fmt: skip
        return None
    if power.driver != "redfish":
        return f"power driver must be command or redfish, not {power.driver!r}"
    if power.on_command or power.off_command or power.status_command:
        return "give commands (--on, --off, --status) or --redfish, not both"
    if not (power.url or "").startswith("https://"):
        return f"--redfish {power.url!r}: a BMC's Redfish API is reached over https://"
    if not power.user:
        return "--redfish needs --user"
    if not power.password_env or not _ENV.fullmatch(power.password_env):
        return "--redfish needs --password-env VAR, the environment variable with the password"
    if power.ca and power.insecure:
        return "give --ca FILE or --insecure, not both"
    return None
