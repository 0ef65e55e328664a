"""Read the lab guest's serial console on the host: parse its lines and time them.

The guest (vmferry/lab/guest/guestd.c and init) writes one event per line to ttyS0, which
QEMU appends to a file. :class:`ConsoleTail` follows that file and stamps every complete line
with the host's clocks the moment it is read. The guest's clock stops while a VM is paused,
so the guest-visible blackout of a live migration is measured here, on the host clock, as the
largest gap between consecutive heartbeat lines (:func:`max_heartbeat_gap_ms`); merge the
source's and the destination's console lines with :func:`merge_lines` first.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from vmferry.errors import LabError


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``HB <seq>``: printed every 50 ms of guest time, seq = 1, 2, 3, ..."""

    seq: int


@dataclass(frozen=True, slots=True)
class MemCheck:
    """``MEMCHECK ok ...`` (a clean verification pass) or ``MEMCHECK fail ...`` (a mismatch)."""

    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class DiskCheck:
    """``DISK sha256=<hex> bytes=<n>``: the checksum of the whole data disk /dev/vda."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class WorkStat:
    """``WORK rate_mb_s=<set rate> dirtied_kib=<KiB dirtied in the last second> ...``.

    ``lost_ticks`` counts the workload's 5 ms ticks that came too late (vCPU stalled or
    throttled) and whose work was dropped; ``busy_pct`` is the share of the second that the
    workload spent working rather than sleeping (its dirtying is CPU-bound and calibrated to
    take 80% of the vCPU by default). Each is None if the line does not say.
    """

    rate_mb_s: int
    dirtied_kib: int
    lost_ticks: int | None = None
    busy_pct: int | None = None


@dataclass(frozen=True, slots=True)
class NetInfo:
    """``NET <ifname> <mac> <ip/prefix>`` (``NET none - -`` without a NIC)."""

    ifname: str
    mac: str
    ip: str


@dataclass(frozen=True, slots=True)
class Other:
    """Any other line (kernel messages, GUESTD/MEM/RATE/CORRUPT lines, firmware noise)."""

    text: str


ConsoleEvent = Heartbeat | MemCheck | DiskCheck | WorkStat | NetInfo | Other

# ESC c (reset), CSI sequences (ESC [ ... final) and other two-byte escapes, as firmware and
# the kernel print them on the serial console without a newline before the guest's lines.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_]|c)")
_HB = re.compile(r"HB (\d+)")
_MEMCHECK = re.compile(r"MEMCHECK (ok|fail)(?: (.*))?")
_DISK = re.compile(r"DISK sha256=([0-9a-f]{64}) bytes=(\d+)")
_WORK = re.compile(
    r"WORK rate_mb_s=(\d+) dirtied_kib=(\d+)(?: lost_ticks=(\d+))?(?: busy_pct=(\d+))?(?: .*)?"
)
_NET = re.compile(r"NET (\S+) (\S+) (\S+)")


def clean_line(raw: str) -> str:
    """A console line without terminal escapes, carriage returns, NULs and edge blanks."""
    text = _ANSI.sub("", raw)
    return text.replace("\r", "").replace("\x00", "").strip()


def parse_console_line(text: str) -> ConsoleEvent:
    """Parse one console line (escapes and ``\\r`` are ignored); unknown lines give Other."""
    line = clean_line(text)
    if m := _HB.fullmatch(line):
        return Heartbeat(int(m[1]))
    if line.startswith("MEMCHECK ") and (m := _MEMCHECK.fullmatch(line)):
        return MemCheck(m[1] == "ok", m[2] or "")
    if line.startswith("WORK ") and (m := _WORK.fullmatch(line)):
        return WorkStat(
            int(m[1]),
            int(m[2]),
            int(m[3]) if m[3] is not None else None,
            int(m[4]) if m[4] is not None else None,
        )
    if line.startswith("DISK ") and (m := _DISK.fullmatch(line)):
        return DiskCheck(m[1], int(m[2]))
    if line.startswith("NET ") and (m := _NET.fullmatch(line)):
        return NetInfo(m[1], m[2], m[3])
    return Other(line)


@dataclass(frozen=True, slots=True)
class StampedLine:
    """A complete console line and the host clocks when it was read.

    ``monotonic`` is ``time.monotonic()`` (for gaps and durations), ``wall`` is ``time.time()``
    (to correlate with logs of other processes). ``source`` names the console it came from.
    """

    text: str
    monotonic: float
    wall: float
    source: str = ""
    event: ConsoleEvent = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event", parse_console_line(self.text))


class ConsoleTail:
    """Follow a console log that QEMU appends to, stamping each line as it arrives.

    The file may not exist yet, and may be truncated or replaced (a restarted QEMU); the tail
    then starts again from the new file's beginning. A background thread polls the file
    every ``poll_s`` seconds (2 ms by default), so stamps lag the guest by at most that plus
    the host's scheduling delay. Use as a context manager, or call :meth:`start` and
    :meth:`stop`.
    """

    def __init__(
        self,
        path: Path,
        *,
        poll_s: float = 0.002,
        source: str | None = None,
        max_lines: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self.source = source if source is not None else self.path.name
        self.max_lines = max_lines
        self._lines: list[StampedLine] = []
        self._dropped = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle

    def start(self) -> ConsoleTail:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"console-tail:{self.source}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following (reads what is left in the file first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ConsoleTail:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- accessors

    def lines(self, start: int = 0) -> list[StampedLine]:
        """The lines read so far (from index ``start``), oldest first."""
        with self._cond:
            return self._lines[max(0, start - self._dropped) :]

    def events(self, start: int = 0) -> list[ConsoleEvent]:
        return [line.event for line in self.lines(start)]

    def count(self) -> int:
        """How many lines were read so far (an index to pass to wait_for/lines later)."""
        with self._cond:
            return self._dropped + len(self._lines)

    def wait_for(
        self,
        predicate: Callable[[StampedLine], bool],
        timeout: float,
        *,
        start: int = 0,
    ) -> StampedLine:
        """The first line (from index ``start``) that satisfies ``predicate``.

        Raises LabError if none arrives within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                for line in self._lines[max(0, index - self._dropped) :]:
                    if predicate(line):
                        return line
                index = self._dropped + len(self._lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._stop.is_set() and not self._alive()):
                    break
                self._cond.wait(min(remaining, 0.1))
            last = self._lines[-1].text if self._lines else "(nothing)"
        error = f" (reader failed: {self._error})" if self._error else ""
        raise LabError(
            f"console {self.path}: no awaited line within {timeout:.1f} s{error}; "
            f"last line: {last[:120]!r}"
        )

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- reader thread

    def _append(self, raw_lines: Sequence[bytes]) -> None:
        mono, wall = time.monotonic(), time.time()
        stamped = [
            StampedLine(clean_line(raw.decode("utf-8", "replace")), mono, wall, self.source)
            for raw in raw_lines
        ]
        with self._cond:
            self._lines.extend(stamped)
            if self.max_lines is not None and len(self._lines) > self.max_lines:
                extra = len(self._lines) - self.max_lines
                del self._lines[:extra]
                self._dropped += extra
            self._cond.notify_all()

    def _run(self) -> None:
        fd: int | None = None
        ident: tuple[int, int] | None = None
        offset = 0
        partial = b""
        last_stat = 0.0
        try:
            while True:
                stopping = self._stop.is_set()
                chunk = b""
                if fd is not None:
                    chunk = os.pread(fd, 1 << 20, offset)
                # The path is checked when nothing new was read (every 20 ms at most): for
                # a first file, a replaced one (new inode) or a truncated one.
                now = time.monotonic()
                if not chunk and (stopping or now - last_stat >= 0.02 or fd is None):
                    last_stat = now
                    try:
                        st = os.stat(self.path)
                    except FileNotFoundError:
                        st = None
                    if st is not None:
                        new_ident = (st.st_dev, st.st_ino)
                        if fd is None or new_ident != ident or st.st_size < offset:
                            if fd is not None:
                                os.close(fd)
                            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                            ident, offset, partial = new_ident, 0, b""
                            chunk = os.pread(fd, 1 << 20, offset)
                if chunk:
                    offset += len(chunk)
                    parts = (partial + chunk).split(b"\n")
                    partial = parts.pop()
                    if parts:
                        self._append(parts)
                    continue  # there may be more
                if stopping:
                    break
                time.sleep(self.poll_s)
        except BaseException as exc:  # surfaced through wait_for
            self._error = exc
        finally:
            if fd is not None:
                os.close(fd)
            with self._cond:
                self._cond.notify_all()


# --------------------------------------------------------------------------- analysis


def merge_lines(*streams: Iterable[StampedLine]) -> list[StampedLine]:
    """Lines of several consoles (a migration's source and destination) in host-time order."""
    merged = [line for stream in streams for line in stream]
    merged.sort(key=lambda line: line.monotonic)
    return merged


def _heartbeat_pairs(stamped: Iterable[StampedLine]) -> list[tuple[int, int, float, float]]:
    """(seq before, seq after, host time before, host time after) of consecutive heartbeats."""
    pairs: list[tuple[int, int, float, float]] = []
    prev: tuple[int, float] | None = None
    for line in stamped:
        event = line.event
        if not isinstance(event, Heartbeat):
            continue
        if prev is not None:
            if event.seq <= prev[0]:
                continue
            pairs.append((prev[0], event.seq, prev[1], line.monotonic))
        prev = (event.seq, line.monotonic)
    return pairs


def heartbeat_gaps(stamped: Iterable[StampedLine]) -> list[tuple[int, int, float]]:
    """(seq before, seq after, host-clock gap in seconds) between consecutive heartbeats.

    Heartbeats whose seq is not greater than the last one kept (duplicates from a second
    console, or a rebooted guest starting again at 1) are skipped.
    """
    return [(a, b, t1 - t0) for a, b, t0, t1 in _heartbeat_pairs(stamped)]


def max_heartbeat_gap_ms(
    stamped: Iterable[StampedLine],
    start: float | None = None,
    end: float | None = None,
) -> int | None:
    """The largest host-clock gap between consecutive heartbeats, in ms (None if < 2 beats).

    With ``start``/``end`` (``time.monotonic()`` values), only gaps that overlap that window
    count, so a blackout that begins inside the window and ends after it is included.
    """
    gaps = [
        t1 - t0
        for _a, _b, t0, t1 in _heartbeat_pairs(stamped)
        if (end is None or t0 <= end) and (start is None or t1 >= start)
    ]
    return round(max(gaps) * 1000) if gaps else None


def latest_memcheck(events: Iterable[ConsoleEvent | StampedLine]) -> MemCheck | None:
    """The last MEMCHECK event (from events or stamped lines), or None if there is none."""
    last: MemCheck | None = None
    for item in events:
        event = item.event if isinstance(item, StampedLine) else item
        if isinstance(event, MemCheck):
            last = event
    return last


def work_stats(events: Iterable[ConsoleEvent | StampedLine]) -> list[WorkStat]:
    """All WORK events, oldest first."""
    out: list[WorkStat] = []
    for item in events:
        event = item.event if isinstance(item, StampedLine) else item
        if isinstance(event, WorkStat):
            out.append(event)
    return out


def wait_for_memcheck(console: str | Path, timeout_s: float = 60) -> None:
    """Wait for the guest's first clean MEMCHECK on ``console``: its workload has written its
    working set and verified it once (the benchmarks start measuring from there)."""
    with ConsoleTail(Path(console)) as tail:
        tail.wait_for(lambda ln: isinstance(ln.event, MemCheck) and ln.event.ok, timeout_s)
