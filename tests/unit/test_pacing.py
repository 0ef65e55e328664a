"""The byte rate the datastore reads of an import share (drivers/pacing): each read waits
for its slot of the line, so all of them together stay at or under the cap."""

from __future__ import annotations

import threading
import time

import pytest

from vmferry.drivers.pacing import ByteRate, reserve

MIB = 2**20


def test_a_read_goes_at_once_on_a_free_line_and_waits_its_turn_on_a_busy_one() -> None:
    assert reserve(10.0, 0.0, 4 * MIB, 2 * MIB) == (0.0, 12.0)  # free: at once, 2 s of line
    assert reserve(10.5, 12.0, 4 * MIB, 2 * MIB) == (1.5, 14.0)  # busy until 12: waits 1.5 s
    assert reserve(20.0, 14.0, MIB, 2 * MIB) == (0.0, 20.5)  # idle time is not saved up


def test_threads_together_keep_to_the_rate() -> None:
    """Eight threads of four 4 MiB reads at 8 MiB/s on a clock that stands still: each read
    gets its own half-second slot of the line, none two at once."""
    starts: list[float] = []  # every wait given (all asked at t=0, so each is a start time)
    rate = ByteRate(8 * MIB, clock=lambda: 0.0, sleep=starts.append)

    def reader() -> None:
        for _ in range(4):
            rate.take(4 * MIB)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 32 reads of 4 MiB at 8 MiB/s, all asked at t=0: slots every 0.5 s, the last at 15.5 s
    assert sorted(starts) == [0.5 * n for n in range(1, 32)]
    assert rate.waited_s == sum(0.5 * n for n in range(32))


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        ByteRate(0)


def test_a_wait_ends_when_its_reader_closes() -> None:
    """A reader being closed (Ctrl-C, a failed disk) does not sit out the slots its paced
    reads reserved: the wait ends as soon as ``stop`` is set."""
    rate = ByteRate(1.0)  # one byte a second
    rate.take(100)  # the line is now busy for 100 s
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    began = time.monotonic()
    rate.take(1, stop)
    assert time.monotonic() - began < 50  # ended by stop, not the 100 s slot
    assert rate.waited_s == pytest.approx(100, abs=1)
