"""The witness of a VM's QEMU guest agent: ``guest-ping`` before the move (a VM with no agent,
or one that does not answer, offers no such witness), its NICs and clock before and after,
the VM's health command (``vmferry vm set --health-command``, ``guest-exec``) before and
after, and after the move a wait for the agent on the host the VM runs on."""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import replace

from vmferry.drivers.guest_agent import AgentError, agent, read_view, run_in_guest
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import VmferryError
from vmferry.model import Host
from vmferry.model.agent import AgentView, compare, health_verdict
from vmferry.verify.witness import WitnessReport

PING_TIMEOUT_S = 3  # before the move: an agent that does not answer this fast is not there


class AgentWitness:
    def __init__(self, vm: str, source: Host, destination: Host, *, settle_s: float = 15,
                 health: Sequence[str] = ()) -> None:  # fmt: skip
        self.vm = vm
        self.source = source
        self.destination = destination
        self.settle_s = settle_s  # after the move: the agent answers again within this
        self.health = tuple(health)  # argv run in the guest; () for none
        self.before: AgentView | None = None
        self.health_before: int | None = None
        self.why_none = ""

    def start(self) -> None:
        try:
            with LibvirtHost.connect(self.source.name, self.source.uri) as host:
                agent(host, self.vm, "guest-ping", timeout_s=PING_TIMEOUT_S)
                self.before = read_view(host, self.vm)
                self.health_before = self._health(host)
        except VmferryError as exc:  # AgentError, or the host: no agent witness then
            self.why_none = exc.message

    def finish(self, moved: bool, *, running: bool = True) -> WitnessReport:
        if self.before is None:
            return WitnessReport(None, None, None, None)
        where = self.destination if moved else self.source
        after, health_after = self._after(where) if running else (None, None)
        check = compare(self.before, after)
        if self.health:
            ok, note = health_verdict(shlex.join(self.health), self.health_before, health_after,
                                      after is not None)  # fmt: skip
            check = replace(check, health_ok=ok, notes=check.notes + ((note,) if note else ()))
        return WitnessReport(None, None, None, None, agent=check, warnings=check.notes,
                             level="agent")  # fmt: skip

    def _health(self, host: LibvirtHost) -> int | None:
        """The health command's exit code (None: none declared, or it did not end)."""
        if not self.health:
            return None
        try:
            return run_in_guest(host, self.vm, self.health)
        except AgentError:  # the agent refused it (guest-exec disabled, no such file)
            return None

    def _after(self, where: Host) -> tuple[AgentView | None, int | None]:
        deadline = time.monotonic() + self.settle_s
        while True:
            try:
                with LibvirtHost.connect(where.name, where.uri) as host:
                    agent(host, self.vm, "guest-ping", timeout_s=2)
                    return read_view(host, self.vm), self._health(host)
            except (AgentError, VmferryError):
                if time.monotonic() >= deadline:
                    return None, None
                time.sleep(0.5)
