"""Unit tests of vmferry.lab.console: line parsing, heartbeat gaps, the file tail."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vmferry.errors import LabError
from vmferry.lab.console import (
    ConsoleTail,
    DiskCheck,
    Heartbeat,
    MemCheck,
    NetInfo,
    Other,
    StampedLine,
    WorkStat,
    heartbeat_gaps,
    latest_memcheck,
    max_heartbeat_gap_ms,
    merge_lines,
    parse_console_line,
    work_stats,
)

SHA = "4b7d48c9feea4c1b1afe5c30882a9f78cb5b5ee7f7a04323549da3098c0e0910"


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ("HB 1", Heartbeat(1)),
        ("HB 123456\r", Heartbeat(123456)),
        ("MEMCHECK ok pass=3 pages=16384", MemCheck(True, "pass=3 pages=16384")),
        (
            "MEMCHECK fail page=5 word=100 expected=00ff found=00fe",
            MemCheck(False, "page=5 word=100 expected=00ff found=00fe"),
        ),
        (
            "MEMCHECK fail pass=4 pages=10 bad_pages=1",
            MemCheck(False, "pass=4 pages=10 bad_pages=1"),
        ),
        (f"DISK sha256={SHA} bytes=16777216", DiskCheck(SHA, 16777216)),
        ("WORK rate_mb_s=8 dirtied_kib=8192", WorkStat(8, 8192)),
        ("WORK rate_mb_s=8 dirtied_kib=8148 lost_ticks=1", WorkStat(8, 8148, 1)),
        ("WORK rate_mb_s=0 dirtied_kib=0 lost_ticks=0 future=1", WorkStat(0, 0, 0)),
        (
            "WORK rate_mb_s=36 dirtied_kib=36864 lost_ticks=0 busy_pct=79",
            WorkStat(36, 36864, 0, 79),
        ),
        (
            "WORK rate_mb_s=24 dirtied_kib=12288 lost_ticks=98 busy_pct=100 future=1",
            WorkStat(24, 12288, 98, 100),
        ),
        # An optional field that is not a number is ignored like an unknown one.
        ("WORK rate_mb_s=1 dirtied_kib=1 lost_ticks=0 busy_pct=x", WorkStat(1, 1, 0)),
        # Informational WORK lines of the CPU model are not rate reports.
        (
            "WORK cpu-limited rate_mb_s=4000 max_mb_s=310 cpu_share=80",
            Other("WORK cpu-limited rate_mb_s=4000 max_mb_s=310 cpu_share=80"),
        ),
        (
            "CALIB rate_mb_s=24 cpu_share=80 fill_ns=2396 step_ps=3376 extra_steps=37863 "
            "page_ns=130207 took_us=5251",
            Other(
                "CALIB rate_mb_s=24 cpu_share=80 fill_ns=2396 step_ps=3376 extra_steps=37863 "
                "page_ns=130207 took_us=5251"
            ),
        ),
        (
            "NET eth0 52:54:00:12:34:56 10.0.0.5/24",
            NetInfo("eth0", "52:54:00:12:34:56", "10.0.0.5/24"),
        ),
        ("NET none - -", NetInfo("none", "-", "-")),
        (
            "GUESTD start ws_mb=64 rate_mb_s=8 verify_mb_s=32",
            Other("GUESTD start ws_mb=64 rate_mb_s=8 verify_mb_s=32"),
        ),
        # Firmware escape sequences glued to the first line are ignored.
        (f"\x1bc\x1b[?7l\x1b[2JDISK sha256={SHA} bytes=512", DiskCheck(SHA, 512)),
        ("\x1b[0mHB 7", Heartbeat(7)),
        # Malformed lines are not misread.
        ("HB", Other("HB")),
        ("HB x", Other("HB x")),
        ("HB 12 extra", Other("HB 12 extra")),
        ("xHB 12", Other("xHB 12")),
        ("DISK sha256=abc bytes=1", Other("DISK sha256=abc bytes=1")),
        ("WORK rate_mb_s=x dirtied_kib=1", Other("WORK rate_mb_s=x dirtied_kib=1")),
        ("MEMCHECKok", Other("MEMCHECKok")),
        (
            "[    1.234] virtio_net virtio0 eth0: renamed",
            Other("[    1.234] virtio_net virtio0 eth0: renamed"),
        ),
        ("", Other("")),
    ],
)
def test_parse_console_line(text: str, event: object) -> None:
    assert parse_console_line(text) == event


def stamped(*items: tuple[str, float]) -> list[StampedLine]:
    return [StampedLine(text, mono, 1_700_000_000.0 + mono) for text, mono in items]


def test_stamped_line_parses_its_event() -> None:
    line = StampedLine("HB 4", 1.0, 2.0, "src")
    assert line.event == Heartbeat(4)
    assert line == StampedLine("HB 4", 1.0, 2.0, "src")


def test_heartbeat_gaps_and_max_gap() -> None:
    lines = stamped(
        ("GUESTD start", 0.0),
        ("HB 1", 1.000),
        ("HB 2", 1.050),
        ("WORK rate_mb_s=1 dirtied_kib=1024", 1.060),
        ("HB 3", 1.100),
        ("HB 4", 1.452),  # a 352 ms blackout
        ("HB 5", 1.500),
    )
    gaps = heartbeat_gaps(lines)
    assert [(a, b) for a, b, _ in gaps] == [(1, 2), (2, 3), (3, 4), (4, 5)]
    assert [round(g * 1000) for _, _, g in gaps] == [50, 50, 352, 48]
    assert max_heartbeat_gap_ms(lines) == 352


def test_max_gap_window_includes_overlapping_gaps() -> None:
    lines = stamped(("HB 1", 1.0), ("HB 2", 1.05), ("HB 3", 1.5), ("HB 4", 1.55), ("HB 5", 3.0))
    # The window ends inside the 1.05 -> 1.5 gap: it counts.
    assert max_heartbeat_gap_ms(lines, start=1.0, end=1.2) == 450
    # A window after the long gap sees only the last ones.
    assert max_heartbeat_gap_ms(lines, start=1.51, end=1.6) == 1450
    assert max_heartbeat_gap_ms(lines, start=1.2, end=1.52) == 450
    assert max_heartbeat_gap_ms(lines, start=0.0, end=1.01) == 50
    assert max_heartbeat_gap_ms(lines, start=5.0) is None


def test_max_gap_needs_two_heartbeats() -> None:
    assert max_heartbeat_gap_ms([]) is None
    assert max_heartbeat_gap_ms(stamped(("HB 1", 1.0), ("MEMCHECK ok pass=1", 2.0))) is None


def test_gaps_across_two_consoles_skip_duplicates() -> None:
    source = stamped(("HB 10", 1.0), ("HB 11", 1.05), ("HB 12", 1.1))
    # The destination repeats a line the source already showed, then goes on after 300 ms.
    dest = [
        StampedLine(t, m, m, "dst") for t, m in (("HB 12", 1.35), ("HB 13", 1.40), ("HB 14", 1.45))
    ]
    merged = merge_lines(dest, source)
    assert [line.text for line in merged][:3] == ["HB 10", "HB 11", "HB 12"]
    (a1, b1, g1), (a2, b2, g2) = heartbeat_gaps(merged)[-2:]
    assert (a1, b1, a2, b2) == (12, 13, 13, 14)
    assert g1 == pytest.approx(0.30)
    assert g2 == pytest.approx(0.05)
    assert max_heartbeat_gap_ms(merged) == 300


def test_latest_memcheck_and_work_stats() -> None:
    lines = stamped(
        ("MEMCHECK ok pass=1 pages=4", 1.0),
        ("WORK rate_mb_s=8 dirtied_kib=8192", 1.1),
        ("MEMCHECK fail page=1 word=2 expected=1 found=0", 1.2),
        ("WORK rate_mb_s=8 dirtied_kib=8100 lost_ticks=2", 1.3),
    )
    assert latest_memcheck(lines) == MemCheck(False, "page=1 word=2 expected=1 found=0")
    assert latest_memcheck([line.event for line in lines[:2]]) == MemCheck(True, "pass=1 pages=4")
    assert latest_memcheck([]) is None
    assert work_stats(lines) == [WorkStat(8, 8192), WorkStat(8, 8100, 2)]


# --------------------------------------------------------------------------- ConsoleTail


def test_tail_waits_for_file_and_stamps_complete_lines(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    with ConsoleTail(log, source="src") as tail:
        time.sleep(0.02)
        assert tail.lines() == []
        with open(log, "ab") as f:
            f.write(b"HB 1\r\nHB 2\nHB ")
            f.flush()
            before = time.monotonic()
            line = tail.wait_for(lambda ln: ln.event == Heartbeat(2), timeout=2)
            assert line.source == "src"
            assert line.monotonic >= before - 0.001
            assert abs(line.wall - time.time()) < 2
            assert [ln.text for ln in tail.lines()] == ["HB 1", "HB 2"]  # "HB " is partial
            f.write(b"3\n")
            f.flush()
            tail.wait_for(lambda ln: ln.event == Heartbeat(3), timeout=2, start=2)
        assert tail.events() == [Heartbeat(1), Heartbeat(2), Heartbeat(3)]
        assert tail.count() == 3
        assert tail.events(start=2) == [Heartbeat(3)]


def test_tail_follows_truncation_and_replacement(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"HB 1\nHB 2\nHB 3\n")
    with ConsoleTail(log) as tail:
        tail.wait_for(lambda ln: ln.text == "HB 3", timeout=2)
        # QEMU restarted with O_TRUNC: same file, shorter.
        with open(log, "wb") as f:
            f.write(b"HB 1\n")
        tail.wait_for(lambda ln: ln.text == "HB 1", timeout=2, start=3)
        # Replaced by a new file (new inode) that is longer than the old offset.
        new = tmp_path / "new.log"
        new.write_bytes(b"GUESTD start ws_mb=1 rate_mb_s=0\nHB 1\nHB 2\nHB 3\nHB 4\n")
        os.replace(new, log)
        tail.wait_for(lambda ln: ln.text == "HB 4", timeout=2)
    texts = [ln.text for ln in tail.lines()]
    assert texts[:4] == ["HB 1", "HB 2", "HB 3", "HB 1"]
    assert texts[4:] == ["GUESTD start ws_mb=1 rate_mb_s=0", "HB 1", "HB 2", "HB 3", "HB 4"]


def test_tail_wait_for_times_out_with_actionable_error(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"HB 1\n")
    with ConsoleTail(log) as tail:
        t0 = time.monotonic()
        with pytest.raises(LabError, match=r"no awaited line within 0\.2 s.*'HB 1'"):
            tail.wait_for(lambda ln: isinstance(ln.event, DiskCheck), timeout=0.2)
        assert 0.15 < time.monotonic() - t0 < 2


def test_tail_stop_reads_the_rest_and_max_lines(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    tail = ConsoleTail(log, max_lines=3).start()
    log.write_bytes(b"".join(b"HB %d\n" % i for i in range(1, 11)))
    tail.stop()
    assert [ln.text for ln in tail.lines()] == ["HB 8", "HB 9", "HB 10"]
    assert tail.count() == 10
    assert [ln.text for ln in tail.lines(start=9)] == ["HB 10"]
