"""Which downtime figure is the guest's real pause? Every witness of one live move, side by side.

A lab guest is moved kvm1 -> kvm2 -> kvm1 ... by vmferry while five witnesses watch:

- ``libvirt``: the downtime libvirt reports for the completed job (QEMU's own figure);
- ``events``: vmferry's ``guest_pause_ms``, from the source's SUSPENDED and the destination's
  RESUMED lifecycle events, stamped on vmferry's clock as they arrive;
- ``frames``: the fourth witness. The client pings the guest every millisecond; in the lab's
  fabric namespace tcpdump timestamps (kernel time, one clock) every echo reply as it enters
  the VM bridge from kvm1's port and from kvm2's. The pause is the time between the last
  reply from the source's port and the first from the destination's. It shares nothing with
  the others: no libvirt, no guest clock, no console, no TCP;
- ``ping``: the largest gap between the replies the client received;
- ``heartbeat``: the largest gap between the guest's console heartbeats (every 50 ms) on the
  host's clock, and ``echo``: the largest gap of the lab's TCP echo stream (one line every
  10 ms), both from the lab's witness.

    sudo .venv/bin/python bench/downtime.py              # table, 3 moves per dirty rate
    sudo .venv/bin/python bench/downtime.py --json --moves 5 --dirty-mb-s 0,20

Takes about a minute per move.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vmferry.lab import guests, lifecycle
from vmferry.lab import topology as topo
from vmferry.lab.console import wait_for_memcheck
from vmferry.lab.lock import lab_turn
from vmferry.model.migration import JobStatus, MigrationOptions, Strategy
from vmferry.service.migrate import migrate
from vmferry.store.db import open_store

_STAMP = re.compile(r"^(\d+\.\d+) ")
_PING_STAMP = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from")


@dataclass
class Row:
    move: str
    dirty_mb_s: int
    libvirt_ms: int | None
    events_ms: int | None
    qemu_ms: int | None
    frames_ms: int | None
    ping_ms: int | None
    heartbeat_ms: int | None
    echo_ms: int | None
    note: str = ""


class Capture:
    """tcpdump on one fabric port: echo replies from the guest's MAC entering the bridge
    (into a file: a pipe nobody reads would stop it once 64 KiB are written)."""

    def __init__(self, port: str, mac: str) -> None:
        self.out = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", topo.FABRIC_NS, "tcpdump", "-i", port, "-Q", "in", "-n",
             "-tt", "--time-stamp-precision=micro", "-l", "-p",
             f"ether src {mac}"],
            stdout=self.out, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    def stop(self) -> str:
        time.sleep(0.2)
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.out.seek(0)
        text = self.out.read()
        self.out.close()
        return text


def stamps_of(tcpdump_out: str, kind: str = "ICMP echo reply") -> list[float]:
    """The times of the captured frames whose line names ``kind``."""
    return [float(m.group(1)) for line in tcpdump_out.splitlines()
            if kind in line and (m := _STAMP.match(line))]  # fmt: skip


def frame_gap_ms(source: list[float], destination: list[float]) -> int | None:
    """Pure: from the last reply through the source's port before the first through the
    destination's, to that first one."""
    if not destination:
        return None
    first = min(destination)
    before = [t for t in source if t < first]
    return round((first - max(before)) * 1000) if before else None


def _rel(t: float | None, base: float) -> str:
    return "-" if t is None else f"{(t - base) * 1000:+.1f} ms"


def largest_gap_ms(stamps: list[float]) -> int | None:
    ordered = sorted(stamps)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    return round(max(gaps) * 1000) if gaps else None


def one_move(name: str, to: str, dirty: int, raw: Path | None) -> Row:
    record = guests.get_guest(name)
    source = record.host
    captures = {host: Capture(f"{host}-v", record.mac) for host in (source, to)}
    ping_out = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed after the move)
    ping = subprocess.Popen(
        ["ip", "netns", "exec", topo.CLIENT_NS, "ping", "-n", "-D", "-i", "0.001", "-W", "1",
         record.address],
        stdout=ping_out, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    time.sleep(1.0)  # the captures and the ping stream run before the move starts
    try:
        outcome = migrate(name, to, MigrationOptions(strategy=Strategy.LIVE, timeout_s=180))
    finally:
        time.sleep(1.0)
        ping.terminate()
        ping.wait(timeout=10)
        ping_out.seek(0)
        replies = ping_out.read()
        ping_out.close()
        frames = {host: cap.stop() for host, cap in captures.items()}
    stamps = {host: stamps_of(out) for host, out in frames.items()}
    if raw is not None:  # the evidence, to read by hand
        raw.mkdir(parents=True, exist_ok=True)
        stem = f"{name}-{time.strftime('%H%M%S')}-{source}-{to}"
        (raw / f"{stem}.ping").write_text(replies)
        for host, out in frames.items():
            (raw / f"{stem}.{host}-v.tcpdump").write_text(out)
    result = outcome.result
    verified = result.verification
    done = result.status is JobStatus.COMPLETED
    if done:
        guests.note_moved(name, to)
    job = open_store().get_job(result.job_id)
    measured = next((e.data for e in job.events if e.kind == "measure"), {})
    qmp = measured.get("qemu_pause_ms")
    resume_at = measured.get("qemu_resume_at")
    stop_at = measured.get("qemu_stop_at")
    if isinstance(resume_at, float) and isinstance(stop_at, float):  # where the frames fall
        last_src = max((t for t in stamps[source] if t < resume_at), default=None)
        first_dst = min((t for t in stamps[to] if t > stop_at), default=None)
        rarp = stamps_of(frames[to], "RARP") or stamps_of(frames[to], "Reverse Request")
        first_rarp = min(rarp) if rarp else None
        progress(f"    against QEMU's stamps: last reply from the source "
                 f"{_rel(last_src, stop_at)} from STOP; RESUME {_rel(resume_at, stop_at)}; "
                 f"first RARP {_rel(first_rarp, resume_at)} from RESUME; first reply from "
                 f"the destination {_rel(first_dst, resume_at)} from RESUME")  # fmt: skip
    reply_times = [float(m.group(1)) for ln in replies.splitlines() if (m := _PING_STAMP.match(ln))]
    return Row(
        f"{source}->{to}", dirty, result.downtime_ms, result.guest_pause_ms,
        qmp if isinstance(qmp, int) else None,
        frame_gap_ms(stamps[source], stamps[to]), largest_gap_ms(reply_times),
        verified.heartbeat_max_gap_ms if verified else None,
        verified.network_max_gap_ms if verified else None,
        "" if done else (result.reason or result.status.value),
    )  # fmt: skip


def bench(dirty_rates: list[int], moves: int, raw: Path | None) -> list[Row]:
    rows: list[Row] = []
    for dirty in dirty_rates:
        name = f"bench-pause-{dirty}"
        progress(f"guest {name}: dirty {dirty} MiB/s")
        guests.create_guest(name, "kvm1", memory_mb=512, working_set_mb=128, dirty_mb_s=dirty)
        try:
            wait_for_memcheck(guests.get_guest(name).console)
            for i in range(moves):
                to = "kvm2" if i % 2 == 0 else "kvm1"
                row = one_move(name, to, dirty, raw)
                progress(f"  {asdict(row)}")
                rows.append(row)
        finally:
            guests.delete_guest(name)
    return rows


def progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def table(rows: list[Row]) -> str:
    def ms(v: int | None) -> str:
        return "-" if v is None else f"{v} ms"

    lines = ["| move | dirty | libvirt downtime | libvirt events | QEMU events | frames | "
             "ping gap | heartbeat gap | echo gap | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r.move} | {r.dirty_mb_s} MiB/s | {ms(r.libvirt_ms)} | "
                     f"{ms(r.events_ms)} | {ms(r.qemu_ms)} | {ms(r.frames_ms)} | {ms(r.ping_ms)} | "
                     f"{ms(r.heartbeat_ms)} | {ms(r.echo_ms)} | {r.note or '-'} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--moves", type=int, default=3, help="moves per dirty rate")
    parser.add_argument("--dirty-mb-s", default="0,10", help="the guest's dirty rates, MiB/s")
    parser.add_argument("--raw", type=Path, help="keep the ping and tcpdump output here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the benchmark needs root (it runs the lab)")
    rates = [int(x) for x in args.dirty_mb_s.split(",")]
    with lab_turn():
        lifecycle.up(2, 400, progress=progress)
        try:
            rows = bench(rates, args.moves, args.raw)
        finally:
            lifecycle.down()
    sys.stderr.write(table(rows) + "\n")
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
