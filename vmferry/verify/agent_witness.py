"""The witness of a VM's QEMU guest agent: ``guest-ping`` before the move (a VM with no agent,
or one that does not answer, offers no such witness), its NICs and clock before and after,
and after the move a wait for the agent on the host the VM runs on."""

from __future__ import annotations

import time

from vmferry.drivers.guest_agent import AgentError, agent, read_view
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import VmferryError
from vmferry.model import Host
from vmferry.model.agent import AgentView, compare
from vmferry.verify.witness import WitnessReport

PING_TIMEOUT_S = 3  # before the move: an agent that does not answer this fast is not there


class AgentWitness:
    def __init__(self, vm: str, source: Host, destination: Host, *, settle_s: float = 15) -> None:
        self.vm = vm
        self.source = source
        self.destination = destination
        self.settle_s = settle_s  # after the move: the agent answers again within this
        self.before: AgentView | None = None
        self.why_none = ""

    def start(self) -> None:
        try:
            with LibvirtHost.connect(self.source.name, self.source.uri) as host:
                agent(host, self.vm, "guest-ping", timeout_s=PING_TIMEOUT_S)
                self.before = read_view(host, self.vm)
        except VmferryError as exc:  # AgentError, or the host: no agent witness then
            self.why_none = exc.message

    def finish(self, moved: bool) -> WitnessReport:
        if self.before is None:
            return WitnessReport(None, None, None, None)
        where = self.destination if moved else self.source
        after = self._after(where)
        check = compare(self.before, after)
        return WitnessReport(None, None, None, None, agent=check, warnings=check.notes,
                             level="agent")  # fmt: skip

    def _after(self, where: Host) -> AgentView | None:
        deadline = time.monotonic() + self.settle_s
        while True:
            try:
                with LibvirtHost.connect(where.name, where.uri) as host:
                    agent(host, self.vm, "guest-ping", timeout_s=2)
                    return read_view(host, self.vm)
            except (AgentError, VmferryError):
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.5)
