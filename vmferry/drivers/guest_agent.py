"""Ask a VM's QEMU guest agent (through libvirt's ``virDomainQemuAgentCommand``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import libvirt
import libvirt_qemu

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import VmferryError
from vmferry.model.agent import AgentView, view_from


class AgentError(VmferryError):
    """The agent did not answer (not configured, not running, timed out) or refused."""


def agent(host: LibvirtHost, vm: str, command: str, *, timeout_s: int = 5,
          arguments: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """The ``return`` of one agent command; :class:`AgentError` when there is none."""
    message: dict[str, Any] = {"execute": command}
    if arguments is not None:
        message["arguments"] = arguments
    try:
        dom = host._lookup(vm)
        reply = json.loads(libvirt_qemu.qemuAgentCommand(
            dom, json.dumps(message), timeout_s, 0))  # fmt: skip
    except (libvirt.libvirtError, VmferryError, ValueError) as exc:
        why = exc.get_error_message() if isinstance(exc, libvirt.libvirtError) else str(exc)
        raise AgentError(f"guest agent of {vm}: {command}: {why}") from exc
    if "error" in reply:
        raise AgentError(f"guest agent of {vm}: {command}: {reply['error'].get('desc')}")
    return reply.get("return")


def read_view(host: LibvirtHost, vm: str) -> AgentView:
    """The VM's NICs and clock offset, as its agent gives them."""
    interfaces = agent(host, vm, "guest-network-get-interfaces")
    before = time.time()
    try:
        guest_ns: int | None = int(agent(host, vm, "guest-get-time"))
    except (AgentError, TypeError, ValueError):
        guest_ns = None
    return view_from(interfaces or [], guest_ns, before, time.time())


def run_in_guest(host: LibvirtHost, vm: str, argv: Sequence[str], *,
                 timeout_s: float = 10) -> int | None:  # fmt: skip
    """Run ``argv`` in the guest (``guest-exec``, no shell) and return its exit code; None
    when it had not ended after ``timeout_s``. :class:`AgentError` when the agent refused."""
    run = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
    started = agent(host, vm, "guest-exec", arguments=run)
    pid = int(started["pid"])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = agent(host, vm, "guest-exec-status", arguments={"pid": pid})
        if status.get("exited"):
            code = status.get("exitcode")
            return int(code) if code is not None else 128 + int(status.get("signal", 0))
        time.sleep(0.1)
    return None
