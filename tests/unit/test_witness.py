from __future__ import annotations

from vmferry.lab.console import StampedLine
from vmferry.lab.witness import memory_verdict


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
