"""Live migration benchmark: vmferry against plain `virsh migrate --live --p2p`, one lab.

For each dirty rate (a share of the migration link), a fresh lab guest (512 MiB, 256 MiB
working set) is migrated kvm1 -> kvm2 once by each tool: virsh, vmferry with a plain stream,
and vmferry with the stream encrypted (TLS, the lab's migration certificates). Per run:
converged, total time and downtime (QEMU's, read from the destination's completed job),
the guest-visible blackout (largest heartbeat gap on the host clock), bytes transferred,
memory integrity, and the lower bound (the first pass's bytes, i.e. the non-zero RAM, over
the link rate).

    sudo .venv/bin/python bench/live_migration.py            # table
    sudo .venv/bin/python bench/live_migration.py --json     # rows for machines

virsh runs with libvirt's defaults; both tools get --unsafe-equivalent flags because the
lab's shared pool is a directory libvirt cannot recognise as shared. virsh is aborted once
it has run 5 times the lower bound in the 1.5x case (it does not converge), and at 180 s
otherwise; vmferry runs with its own --timeout. Takes about 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_migration import completed_from_stats
from vmferry.lab import guests, lifecycle
from vmferry.lab.console import wait_for_memcheck
from vmferry.lab.lock import lab_turn
from vmferry.lab.witness import LabWitness
from vmferry.model.migration import (
    Compression,
    JobStatus,
    MigrationOptions,
    ProgressSample,
    Strategy,
    TlsMode,
)
from vmferry.service.migrate import migrate, migrate_auto

MIB = 2**20
MIGRATION_URI = "tcp://198.18.1.12"


@dataclass
class Row:
    tool: str
    dirty_ratio: float
    converged: bool
    total_time_ms: int | None
    downtime_ms: int | None
    blackout_ms: int | None
    transferred_bytes: int | None
    lower_bound_ms: int | None
    memory_integrity: str | None = None
    escalations: str = ""
    note: str = ""
    guest_pause_ms: int | None = None  # vmferry's measured pause (hosts' events); virsh: none
    qemu_version: str | None = None  # the stack the row ran on (kvm1's, as libvirt reports it)
    libvirt_version: str | None = None


def first_pass_bytes(samples: list[ProgressSample]) -> int | None:
    """What the first pass sent: the memory processed when the second pass began."""
    return next((s.memory_processed_bytes for s in samples if s.iteration >= 2), None)


# The hand-tuned virsh lines: 4 multifd channels with zstd and auto-converge; and post-copy
# after the first pass on the single stream (QEMU 10.0 refuses post-copy beside multifd, so
# the two cannot be one line). The best of the two per row is "the best hand-tuned virsh".
VIRSH_TUNED = ["--parallel", "--parallel-connections", "4", "--compressed", "--comp-methods",
               "zstd", "--auto-converge"]  # fmt: skip
VIRSH_POSTCOPY = ["--postcopy", "--postcopy-after-precopy"]
VIRSH_LINES = {"virsh": [], "virsh-tuned": VIRSH_TUNED, "virsh-postcopy": VIRSH_POSTCOPY}
VMFERRY_TOOLS = ("vmferry", "vmferry-tls", "vmferry-multifd", "vmferry-xbzrle", "vmferry-auto")


def run_virsh(name: str, ratio: float, link_bytes_s: float, tool: str = "virsh") -> Row:
    record = guests.get_guest(name)
    witness = LabWitness(record)
    witness.start()
    src_uri, dst_uri = lifecycle.host_uri("kvm1"), lifecycle.host_uri("kvm2")
    src = libvirt.open(src_uri)
    dom = src.lookupByName(name)
    argv = ["virsh", "-c", src_uri, "migrate", "--live", "--p2p", "--persistent",
            "--undefinesource", "--unsafe", *VIRSH_LINES[tool], name, dst_uri,
            MIGRATION_URI]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    pass1: int | None = None
    aborted = False
    while proc.poll() is None:
        try:
            stats = dom.jobStats(0)
            if pass1 is None and int(stats.get("memory_iteration", 0)) >= 2:
                pass1 = int(stats.get("memory_processed", 0))
        except libvirt.libvirtError:
            pass
        lower = pass1 / link_bytes_s if pass1 else None
        limit = 5 * lower if (ratio >= 1 and lower) else 180.0
        if time.monotonic() - started > limit and not aborted:
            aborted = True
            subprocess.run(["virsh", "-c", src_uri, "domjobabort", name], capture_output=True)
        time.sleep(0.25)
    wall_ms = round((time.monotonic() - started) * 1000)
    converged = proc.returncode == 0
    stats_done: dict[str, Any] = {}
    if converged:
        dst = libvirt.open(dst_uri)
        stats_done = dst.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        dst.close()
    src.close()
    report = witness.finish(converged)
    done = completed_from_stats(stats_done)
    _, err = proc.communicate()
    note = "aborted at 5x the lower bound" if aborted else err.strip()[-120:]
    total_ms = done.total_time_ms
    if converged and total_ms is None:  # libvirt keeps no statistics after post-copy
        total_ms, note = wall_ms, "total: virsh's wall clock (no statistics after post-copy)"
    if converged:
        guests.note_moved(name, "kvm2")
    return Row(tool, ratio, converged, total_ms, done.downtime_ms,
               report.heartbeat_max_gap_ms, done.transferred_bytes,
               round(pass1 / link_bytes_s * 1000) if pass1 else None, report.memory_integrity,
               note=note)  # fmt: skip


def run_vmferry(
    name: str, ratio: float, link_bytes_s: float, timeout_s: float, *, tls: bool = False,
    multifd: bool = False, xbzrle: bool = False, auto: bool = False,
) -> Row:  # fmt: skip
    samples: list[ProgressSample] = []
    strategy = Strategy.POSTCOPY if ratio >= 1 else Strategy.LIVE
    zstd = Compression.ZSTD if multifd else Compression.XBZRLE if xbzrle else Compression.NONE
    options = MigrationOptions(strategy=strategy, timeout_s=timeout_s,
                               tls=TlsMode.REQUIRED if tls else TlsMode.OFF,
                               parallel=4 if multifd else 0, compression=zstd)  # fmt: skip
    run = migrate_auto if auto else migrate  # auto: vmferry chooses (the strategy is ignored)
    outcome = run(name, "kvm2", options, on_progress=lambda s, _st: samples.append(s))
    result = outcome.result
    pass1 = first_pass_bytes(samples)
    v = result.verification
    tool = ("vmferry+tls" if tls else "vmferry-multifd" if multifd
            else "vmferry-xbzrle" if xbzrle else "vmferry-auto" if auto else "vmferry")  # fmt: skip
    return Row(tool, ratio, result.status is JobStatus.COMPLETED,
               result.total_time_ms,
               result.downtime_ms, v.heartbeat_max_gap_ms if v else None,
               result.transferred_bytes,
               round(pass1 / link_bytes_s * 1000) if pass1 else None,
               v.memory_integrity if v else None,
               ", ".join(f"{e.step}{'=' + str(e.value) if e.value else ''}@{e.at_ms / 1000:.1f}s"
                         for e in result.escalations),
               "; ".join(filter(None, [f"chose {result.strategy}" if auto else "",
                                       result.reason or ""])),
               result.guest_pause_ms)  # fmt: skip


def bench(ratios: list[float], tools: list[str], link_mbps: int, memory_mb: int,
          working_set_mb: int) -> list[Row]:  # fmt: skip
    link_bytes_s = link_mbps * 1_000_000 / 8
    link_mib_s = link_bytes_s / MIB
    with LibvirtHost.connect("kvm1", lifecycle.host_uri("kvm1")) as kvm1:
        stack = kvm1.info()
    rows: list[Row] = []
    for ratio in ratios:
        dirty = round(ratio * link_mib_s)
        for tool in tools:
            name = f"bench-{tool}-{str(ratio).replace('.', '')}"
            progress(f"{tool}: {dirty} MiB/s ({ratio}x the link)")
            guests.create_guest(name, "kvm1", memory_mb=memory_mb, working_set_mb=working_set_mb,
                                dirty_mb_s=dirty)  # fmt: skip
            try:
                wait_for_memcheck(guests.get_guest(name).console)
                if tool in VIRSH_LINES:
                    row = run_virsh(name, ratio, link_bytes_s, tool)
                else:  # vmferry (plain), vmferry-tls (encrypted), -multifd, -xbzrle, -auto
                    row = run_vmferry(name, ratio, link_bytes_s, timeout_s=180,
                                      tls=tool == "vmferry-tls",
                                      multifd=tool == "vmferry-multifd",
                                      xbzrle=tool == "vmferry-xbzrle",
                                      auto=tool == "vmferry-auto")  # fmt: skip
            finally:
                guests.delete_guest(name)
            row.qemu_version, row.libvirt_version = stack.hypervisor_version, stack.libvirt_version
            rows.append(row)
            progress(f"  -> {asdict(row)}")
    return rows


def progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def table(rows: list[Row]) -> str:
    def ms(v: int | None) -> str:
        return "-" if v is None else f"{v / 1000:.1f} s" if v >= 1000 else f"{v} ms"

    stacks = sorted({f"QEMU {r.qemu_version}, libvirt {r.libvirt_version}" for r in rows})
    lines = [f"Stack: {'; '.join(stacks)}", "",
             "| tool | dirty rate | converged | total time | QEMU downtime | guest pause | "
             "blackout | transferred | lower bound | memory | escalations |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        moved = "-" if r.transferred_bytes is None else f"{r.transferred_bytes / MIB:.0f} MiB"
        lines.append(f"| {r.tool} | {r.dirty_ratio}x | {'yes' if r.converged else 'no'} | "
                     f"{ms(r.total_time_ms)} | {ms(r.downtime_ms)} | {ms(r.guest_pause_ms)} | "
                     f"{ms(r.blackout_ms)} | "
                     f"{moved} | {ms(r.lower_bound_ms)} | {r.memory_integrity or '-'} | "
                     f"{r.escalations or '-'} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--ratios", default="0,0.25,0.75,1.5")
    parser.add_argument(
        "--tools",
        default="virsh,vmferry,vmferry-tls",
        help="of virsh, virsh-tuned (multifd x4 + zstd, auto-converge), virsh-postcopy "
        "(--postcopy --postcopy-after-precopy), vmferry, vmferry-tls, vmferry-multifd (x4 + zstd), "
        "vmferry-xbzrle (--compress xbzrle), vmferry-auto (--strategy auto: vmferry chooses)",
    )
    parser.add_argument("--link-mbps", type=int, default=400)
    parser.add_argument("--memory-mb", type=int, default=512)
    parser.add_argument("--working-set-mb", type=int, default=256)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the benchmark needs root (it runs the lab)")
    ratios = [float(x) for x in args.ratios.split(",")]
    tools = args.tools.split(",")
    unknown = [t for t in tools if t not in (*VIRSH_LINES, *VMFERRY_TOOLS)]
    if unknown:  # before the lab starts: a misspelt tool would run as plain vmferry
        parser.error(f"unknown tool(s): {', '.join(unknown)}")
    with lab_turn():
        lifecycle.up(2, args.link_mbps, progress=progress)
        try:
            rows = bench(ratios, tools, args.link_mbps, args.memory_mb, args.working_set_mb)
        finally:
            lifecycle.down()
    sys.stderr.write(table(rows) + "\n")
    if args.json:
        keys = ["tool", "dirty_ratio", "converged", "total_time_ms", "downtime_ms",
                "guest_pause_ms", "blackout_ms", "transferred_bytes", "lower_bound_ms",
                "qemu_version", "libvirt_version"]  # fmt: skip
        print(json.dumps([{k: asdict(r)[k] for k in keys} for r in rows], indent=2))
    else:
        print(table(rows))
    return 0 if all(r.memory_integrity != "fail" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
