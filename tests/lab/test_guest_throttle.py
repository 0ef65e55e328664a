"""The lab guest's memory workload is CPU-bound: capping its vCPU lowers its dirty rate.

A real write-heavy workload dirties less when it gets less CPU (a vCPU quota, or QEMU's
auto-converge throttle); guestd calibrates its per-page work so that dirtying at the set rate
takes 80% of the vCPU, and loses the ticks it cannot do. Here a guest on kvm1 runs unthrottled,
then under a 40% vCPU quota (expected about 40/80 = 50% of the rate), with a rate change while
capped (the calibration must not be fooled by the throttle), then uncapped again.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vmferry.lab import client
from vmferry.lab.console import (
    ConsoleTail,
    MemCheck,
    StampedLine,
    WorkStat,
    max_heartbeat_gap_ms,
    work_stats,
)
from vmferry.lab.lifecycle import host_uri
from vmferry.lab.state import GuestRecord, LabState

pytestmark = pytest.mark.lab

GUEST = "thr1"
RATE = 24  # MiB/s
QUOTA = 4000  # of a 10000 us period: 40% of a CPU
# How close the unthrottled guest comes to RATE depends on this host's speed under TCG (guestd
# calibrates its per-page work at boot; a step costs more when the host is busier than it
# was then): printed, not judged. The test judges relations measured on the same host, in
# the same run: the cap must cost at least CAPPED_MAX of the free rate (40% of a CPU for a
# workload that takes ~80% of one, or all of one on a slow host: about 0.5, at most ~0.65),
# and lifting the cap must bring back at least RESTORED_MIN of it.
CAPPED_MAX = 0.75
RESTORED_MIN = 0.8
# The free run must be CPU-bound for a cap to bite: its busy share at least this (calibrated
# for 80%), else the calibration was taken in a slow moment and is taken again.
MIN_FREE_BUSY = 0.6
CALIBRATIONS = 3


def set_vcpu_quota(quota: int) -> None:
    """Cap (or with -1 uncap) the guest's vCPU and check that libvirt applied it."""
    subprocess.run(
        ["virsh", "-c", host_uri("kvm1"), "schedinfo", GUEST, "--live", "vcpu_period=10000",
         f"vcpu_quota={quota}"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    out = subprocess.run(["virsh", "-c", host_uri("kvm1"), "schedinfo", GUEST, "--live"],
                         capture_output=True, text=True, check=True, timeout=30).stdout  # fmt: skip
    m = re.search(r"^vcpu_quota\s*:\s*(-?\d+)", out, re.M)
    assert m is not None, out
    # libvirt reports "no limit" as -1 or as a huge number, depending on the version
    assert int(m[1]) == quota or (quota < 0 and (int(m[1]) < 0 or int(m[1]) >= 10**12)), out


def read_work(tail: ConsoleTail, seconds: float) -> tuple[list[WorkStat], list[StampedLine]]:
    """WORK lines of the next ``seconds`` (the first one, which straddles a change, skipped)."""
    start = tail.count()
    time.sleep(seconds)
    lines = tail.lines(start)
    return work_stats(lines)[1:], lines


def calibrated(rate: int) -> Callable[[StampedLine], bool]:
    """Matches guestd's CALIB line for ``rate``."""
    return lambda ln: ln.text.startswith(f"CALIB rate_mb_s={rate} ")


def busy_share(work: list[WorkStat]) -> float:
    """The workload's mean busy share over ``work`` (0..1)."""
    return statistics.fmean(w.busy_pct or 0 for w in work) / 100 if work else 0.0


def mean_mib_s(work: list[WorkStat]) -> float:
    assert work, "no WORK lines"
    return statistics.fmean(w.dirtied_kib for w in work) / 1024


def describe(name: str, work: list[WorkStat], lines: list[StampedLine]) -> str:
    return (
        f"{name}: {mean_mib_s(work):.1f} MiB/s dirtied_kib {[w.dirtied_kib for w in work]} "
        f"lost_ticks {[w.lost_ticks for w in work]} busy_pct {[w.busy_pct for w in work]} "
        f"max HB gap {max_heartbeat_gap_ms(lines)} ms"
    )


def test_vcpu_cap_lowers_dirty_rate_and_lifting_it_restores_it(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    record = lab_guests(GUEST, "kvm1", memory_mb=512, working_set_mb=128,
                                 dirty_mb_s=RATE)  # fmt: skip
    try:
        with ConsoleTail(Path(record.console)) as tail:
            tail.wait_for(lambda ln: isinstance(ln.event, MemCheck), timeout=60)
            calib = tail.wait_for(lambda ln: ln.text.startswith("CALIB "), timeout=5, start=0)
            print(f"[throttle] {calib.text}")
            # guestd calibrated its per-page work while the guest booted, when TCG's boot
            # work made every step look dearer (2.6x once: the free rate then took 40% of the
            # vCPU, not 80%, and the 40% cap hardly cost anything; guestd now keeps the
            # fastest of three rounds, which has held). A rate change makes it calibrate
            # again, now that the guest is settled: away and back.
            # A calibration can still be taken in a slow moment of the host (the suite's run
            # of 2026-12-05: step_ps 4502 where it was 2441 and 2465 before and after, so
            # the free rate took 43% of the vCPU and the 40% cap cost only 15%). What the
            # test needs is a workload that is CPU-bound at its free rate: its busy share
            # near the calibrated 80%. So each calibration is checked by what the free run
            # then measures, and one taken in a slow moment is taken again (at most
            # CALIBRATIONS times; each is printed, and the test fails if none holds).
            for attempt in range(1, CALIBRATIONS + 1):
                for rate in (RATE - 1, RATE):
                    sent_at = tail.count()
                    assert client.control(record.address, f"rate {rate}") == f"ok rate {rate}"
                    calib = tail.wait_for(calibrated(rate), timeout=30, start=sent_at)
                print(f"[throttle] settled ({attempt}): {calib.text}")
                free, free_lines = read_work(tail, 5.2)
                print("[throttle] " + describe("unthrottled", free, free_lines))
                if busy_share(free) >= MIN_FREE_BUSY:
                    break
            assert busy_share(free) >= MIN_FREE_BUSY, describe("never CPU-bound", free,
                                                               free_lines)  # fmt: skip

            capped_from = tail.count()
            set_vcpu_quota(QUOTA)
            capped, capped_lines = read_work(tail, 5.2)
            print("[throttle] " + describe("capped 40%", capped, capped_lines))
            # the verifier still completes passes under the cap (slower)
            check = tail.wait_for(lambda ln: isinstance(ln.event, MemCheck), timeout=30,
                                  start=tail.count())  # fmt: skip
            # a new rate while capped: calibrated again, and the cap must not fool it
            assert client.control(record.address, "rate 12") == "ok rate 12"
            capped12, capped12_lines = read_work(tail, 4.2)
            print("[throttle] " + describe("capped 40%, rate 12", capped12, capped12_lines))
            assert client.control(record.address, f"rate {RATE}") == f"ok rate {RATE}"
            time.sleep(1.2)
            capped_window = tail.lines(capped_from)

            set_vcpu_quota(-1)
            again, again_lines = read_work(tail, 5.2)
            print("[throttle] " + describe("uncapped", again, again_lines))
            all_lines = tail.lines()
    finally:  # leave no cap behind, even if the test failed while capped
        with contextlib.suppress(subprocess.SubprocessError, AssertionError):
            set_vcpu_quota(-1)

    calibs = [ln.text for ln in all_lines if ln.text.startswith("CALIB ")]
    print("[throttle] " + "\n[throttle] ".join(calibs))
    print(f"[throttle] under the cap: {check.text}; max HB gap "
          f"{max_heartbeat_gap_ms(capped_window)} ms")  # fmt: skip

    assert all(w.rate_mb_s == RATE and w.busy_pct is not None for w in free + capped + again)
    assert all(w.rate_mb_s == 12 for w in capped12)
    free_rate, capped_rate, again_rate = mean_mib_s(free), mean_mib_s(capped), mean_mib_s(again)
    print(f"[throttle] capped/free {capped_rate / free_rate:.2f}, "
          f"uncapped again/free {again_rate / free_rate:.2f}")  # fmt: skip
    assert free_rate <= 1.1 * RATE, describe("free", free, free_lines)  # never above the rate
    assert 0 < capped_rate <= CAPPED_MAX * free_rate, (free_rate, capped)
    # at rate 12 the cap costs as much: a calibration fooled by the throttle (costs measured
    # too high, too little work a page) would let the guest reach 12 within its 40%
    assert 0 < mean_mib_s(capped12) / 12 <= CAPPED_MAX * free_rate / RATE, (free_rate, capped12)
    assert RESTORED_MIN * free_rate <= again_rate <= 1.1 * RATE, (free_rate, again)

    # The cap stops the vCPU for up to 6 ms of every 10 ms period; the heartbeat thread has
    # real-time priority in the guest. 300 ms is 30 periods: a guest still beating, on any host.
    gap = max_heartbeat_gap_ms(capped_window)
    assert gap is not None and gap < 300, gap
    assert isinstance(check.event, MemCheck) and check.event.ok, check.text
    memchecks = [ln.event for ln in all_lines if isinstance(ln.event, MemCheck)]
    assert memchecks and all(m.ok for m in memchecks), [m for m in memchecks if not m.ok]
    # at start, away and back once settled (once more for each calibration taken again in a
    # slow moment, above), rate 12, rate 24 again (each one's time: printed)
    rates = (RATE, *(RATE - 1, RATE) * attempt, 12, RATE)
    assert [c.split()[1] for c in calibs] == [f"rate_mb_s={r}" for r in rates], calibs
