"""Ask a VM's QEMU guest agent (through libvirt's ``virDomainQemuAgentCommand``)."""

from __future__ import annotations

import json
import time
from typing import Any

import libvirt
import libvirt_qemu

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import VmferryError
from vmferry.model.agent import AgentView, view_from


class AgentError(VmferryError):
    """The agent did not answer (not configured, not running, timed out) or refused."""


def agent(host: LibvirtHost, vm: str, command: str, *, timeout_s: int = 5) -> Any:
    """The ``return`` of one agent command; :class:`AgentError` when there is none."""
    try:
        dom = host._lookup(vm)
        reply = json.loads(libvirt_qemu.qemuAgentCommand(
            dom, json.dumps({"execute": command}), timeout_s, 0))  # fmt: skip
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
