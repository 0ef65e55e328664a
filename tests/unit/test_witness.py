from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vmferry.lab.console import StampedLine
from vmferry.lab.state import GuestRecord
from vmferry.lab.witness import LabWitness, memory_verdict
from vmferry.model import Host
from vmferry.model.agent import AgentView, compare
from vmferry.verify.agent_witness import AgentWitness


def line(text: str, t: float) -> StampedLine:
    return StampedLine(text, t, 1000 + t)


def test_ok_needs_a_whole_pass_after_the_move() -> None:
    lines = [line("MEMCHECK ok pass=1", 1.0), line("HB 5", 2.0), line("MEMCHECK ok pass=2", 6.0)]
    assert memory_verdict(lines, after=5.0) == (None, "")  # only one pass ended after it
    lines.append(line("MEMCHECK ok pass=3", 9.0))
    assert memory_verdict(lines, after=5.0)[0] == "ok"


def test_any_failure_is_a_failure() -> None:
    lines = [line("MEMCHECK ok pass=1", 1.0), line("MEMCHECK fail page=7 word=3", 2.0),
             line("MEMCHECK ok pass=2", 8.0), line("MEMCHECK ok pass=3", 9.0)]  # fmt: skip
    verdict, detail = memory_verdict(lines, after=5.0)
    assert verdict == "fail" and "page=7" in detail


def test_the_requested_full_pass_decides_at_once() -> None:
    lines = [line("MEMCHECK ok pass=1", 1.0), line("MEMCHECK ok full=41 pages=8", 5.5)]
    assert memory_verdict(lines, after=5.0, full_pass=42) == (None, "")  # another request's
    lines.append(line("MEMCHECK ok full=42 pages=8", 6.5))
    assert memory_verdict(lines, after=5.0, full_pass=42)[0] == "ok"
    early = [line("MEMCHECK ok full=42 pages=8", 4.0)]  # ended before the move: not it
    assert memory_verdict(early, after=5.0, full_pass=42) == (None, "")


def test_a_requested_full_pass_that_fails_is_a_failure() -> None:
    lines = [line("MEMCHECK fail page=3 word=100 expected=1 found=2", 5.2),
             line("MEMCHECK fail full=42 pages=8 bad_pages=1", 5.4)]  # fmt: skip
    verdict, detail = memory_verdict(lines, after=5.0, full_pass=42)
    assert verdict == "fail" and "page=3" in detail


def _lab_witness(tmp_path: Path, console: str) -> LabWitness:
    log = tmp_path / "g.log"
    log.write_text(console)
    guest = GuestRecord(name="g", host="kvm1", octet=100, address="198.18.2.100",
                        mac="52:54:00:12:02:64", console=str(log), data_disk="/d",
                        data_sha256="0")  # fmt: skip
    witness = LabWitness(guest)
    witness._tail.start()  # what start() does, without the probe (no lab namespaces here)
    witness._tail.wait_for(lambda ln: ln.text.startswith("HB 2"), timeout=5)
    return witness


def _never(*_args: object) -> Any:
    raise AssertionError("a witness of a guest that runs nowhere asked or waited for it")


def test_a_guest_that_runs_nowhere_is_reported_at_once_with_what_was_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed move whose guest died (running=False): the lab witness neither asks the
    guest for a verification pass nor waits its 40 s for one; a memory check that failed
    before still fails the report, and none is said to be missing."""
    monkeypatch.setattr(LabWitness, "_request_full_pass", _never)  # the wait comes after it
    clean = _lab_witness(tmp_path, "HB 1\nMEMCHECK ok pass=1\nHB 2\n")
    report = clean.finish(False, running=False)
    assert (report.memory_integrity, report.problems, report.level) == (None, (), "lab")
    failed = _lab_witness(tmp_path, "HB 1\nMEMCHECK fail page=7 word=3\nHB 2\n")
    report = failed.finish(False, running=False)
    assert report.memory_integrity == "fail"
    assert report.problems == ("memory check failed: page=7 word=3",)


def test_the_agent_witness_does_not_wait_for_a_guest_that_runs_nowhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """running=False: no wait for the source's agent; the check says it gave no view."""
    host = Host(name="kvm1", uri="qemu+tls://kvm1/system")
    witness = AgentWitness("vm", host, replace(host, name="kvm2"))
    witness.before = AgentView(addresses={"52:54:00:12:02:64": frozenset({"198.18.2.100/24"})},
                               clock_offset_ms=0.0)  # fmt: skip
    monkeypatch.setattr(AgentWitness, "_after", _never)
    report = witness.finish(False, running=False)
    assert report.agent == compare(witness.before, None) and report.level == "agent"
