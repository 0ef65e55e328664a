"""The lab's witness: it watches a lab guest from outside while it moves.

It reads the guest's serial console on the host clock (heartbeat every 50 ms, ``MEMCHECK``
lines) and keeps a TCP connection to the guest's echo service from the client namespace,
one line every 10 ms. The lab registers it through :mod:`vmferry.lab.site`.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

from vmferry.errors import VmferryError
from vmferry.lab import client
from vmferry.lab import topology as topo
from vmferry.lab.console import ConsoleTail, Heartbeat, MemCheck, StampedLine, max_heartbeat_gap_ms
from vmferry.lab.state import GuestRecord
from vmferry.verify.witness import WitnessReport


def memory_verdict(
    lines: list[StampedLine], after: float, full_pass: int | None = None
) -> tuple[str | None, str]:
    """Pure: "fail" if any MEMCHECK failed; "ok" once a whole pass began and ended after
    ``after``: the clean end of the full pass ``full_pass`` requested after it, or the second
    clean MEMCHECK after it; None if neither has happened yet."""
    clean = 0
    for line in lines:
        event = line.event
        if isinstance(event, MemCheck):
            if not event.ok:
                return "fail", event.detail
            if line.monotonic >= after:
                clean += 1
                if full_pass is not None and event.detail.startswith(f"full={full_pass} "):
                    clean = 2
    return ("ok", "a full verification pass ran after the move") if clean >= 2 else (None, "")


class LabWitness:
    """Watches a lab guest (see the module docstring)."""

    def __init__(self, guest: GuestRecord, *, memcheck_timeout_s: float = 40.0) -> None:
        self.guest = guest
        self.memcheck_timeout_s = memcheck_timeout_s
        self._tail = ConsoleTail(Path(guest.console))
        self._probe: subprocess.Popen[str] | None = None
        self._started = 0.0

    def start(self) -> None:
        self._tail.start()
        self._probe = subprocess.Popen(
            ["ip", "netns", "exec", topo.CLIENT_NS, sys.executable, "-m", "vmferry.lab.probe",
             "watch", self.guest.address, "--interval-ms", "10"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # the terminal's Ctrl-C is for vmferry, not for the probe
        )  # fmt: skip
        time.sleep(0.3)  # the console tail catches up; the probe connects
        self._started = time.monotonic()

    def finish(self, moved: bool, *, running: bool = True) -> WitnessReport:
        ended = time.monotonic()
        problems: list[str] = []
        network = self._stop_probe(problems)
        # a guest that runs nowhere (running=False) is asked for no pass and waited for
        # not at all: a failed check it showed before still counts (no pass can end after
        # the move: ``after`` is never), and nothing is said to be missing
        full_pass = self._request_full_pass() if running else None
        after = ended if running else math.inf
        verdict, detail = memory_verdict(self._tail.lines(), after, full_pass)
        deadline = ended + (self.memcheck_timeout_s if running else 0)
        while verdict is None and time.monotonic() < deadline:
            time.sleep(0.2)
            verdict, detail = memory_verdict(self._tail.lines(), after, full_pass)
        lines = self._tail.lines()
        self._tail.stop()
        if verdict is None and running:
            problems.append(f"no memory verification pass finished within "
                            f"{self.memcheck_timeout_s:g} s after the move")  # fmt: skip
        elif verdict == "fail":
            problems.append(f"memory check failed: {detail}")
        beats_after = [
            ln for ln in lines if isinstance(ln.event, Heartbeat) and ln.monotonic > ended
        ]
        if not beats_after and running:
            problems.append("no heartbeat after the move")
        gap = max_heartbeat_gap_ms(lines, start=self._started, end=ended)
        kept = network.get("connection_kept") if network else None
        if kept is False and moved:
            problems.append("the TCP connection to the guest's echo service broke")
        net_gap = network.get("max_gap_ms") if network else None
        return WitnessReport(
            heartbeat_max_gap_ms=gap,
            memory_integrity=verdict,
            network_max_gap_ms=int(net_gap) if isinstance(net_gap, int) else None,
            tcp_connection_kept=kept if isinstance(kept, bool) else None,
            problems=tuple(problems),
            level="lab",
        )

    def _request_full_pass(self) -> int | None:
        """Ask guestd for a whole verification pass now (``verify <id>``), so the verdict
        need not wait for two rolling passes at the guest's slow verification rate; None
        when the guest does not answer (the rolling passes still decide)."""
        token = time.time_ns()
        try:
            reply = client.control(self.guest.address, f"verify {token}")
        except VmferryError:  # LabError, or ToolError when the probe itself fails
            return None
        return token if reply == f"ok verify {token}" else None

    def _stop_probe(self, problems: list[str]) -> dict[str, object] | None:
        if self._probe is None:
            return None
        self._probe.send_signal(signal.SIGTERM)
        try:
            out, err = self._probe.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._probe.kill()
            out, err = self._probe.communicate()
        try:
            result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            problems.append(f"the network probe gave no result: {err.strip()[-200:]}")
            return None
        return result
