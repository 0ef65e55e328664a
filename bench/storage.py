"""Storage benchmark: vmferry against virsh, one lab, while the guest writes to the disk.

Two operations, each run once by each tool on a fresh lab guest whose data disk (qcow2,
``--disk-mib``, full of known content) the guest overwrites with 1 MiB blocks spread over
the disk at about ``--write-mib-s`` during the whole operation:

- ``copy-storage``: a live move kvm1 -> kvm2 of a guest whose disk is on kvm1's own pool:
  ``vmferry migrate --copy-storage`` (vmferry.service.migrate) against ``virsh migrate
  --live --p2p --persistent --undefinesource --copy-storage-all``;
- ``move-storage``: the disk moved from the shared pool into kvm1's own pool while the VM
  runs: ``vmferry move-storage`` (vmferry.service.move_storage) against ``virsh blockcopy
  --wait --pivot --transient-job`` (then the old file removed, as vmferry does);
- ``offline``: the same guest (its disk on kvm1's own pool) moved to kvm2 and booted there,
  ``vmferry migrate --strategy warm-incremental`` against ``--strategy cold`` (shut down,
  copy the whole disk, boot): the downtime of each, the first stopped for its last round
  only (the note gives each round's MiB). The guest reboots: its writes end at the stop, so
  the content check compares the guest's own sha256 after the boot with the image.

Per row: total time (the tool's call on the clock), downtime (libvirt's, copy-storage only),
bytes libvirt reports sent, MiB the guest wrote during the operation, and whether the
content is right: the guest's own sha256 of its disk after the operation (its writer
stopped, synced) against the new image read offline.

    sudo .venv/bin/python bench/storage.py                  # table
    sudo .venv/bin/python bench/storage.py --json           # rows for machines
    sudo .venv/bin/python bench/storage.py --disk-mib 2048  # the issue's 2 GiB disk
    sudo .venv/bin/python bench/storage.py --operations offline
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import libvirt

from vmferry.drivers.guest_agent import agent
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_migration import completed_from_stats
from vmferry.lab import guests, lifecycle
from vmferry.lab.lock import lab_turn
from vmferry.lab.state import lab_dir
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult, Strategy
from vmferry.service.migrate import migrate
from vmferry.service.move_storage import move_storage
from vmferry.store.db import open_store

MIB = 2**20
MIGRATION_URI = "tcp://198.18.1.12"
HOST_IMAGES = "/var/lib/libvirt/images"  # kvm1's own pool as its libvirtd sees it


@dataclass
class Row:
    operation: str
    tool: str
    disk_mib: int
    ok: bool
    total_time_ms: int | None
    downtime_ms: int | None
    transferred_bytes: int | None
    written_during_mib: int
    content: str  # "verified" | "DIFFERS" | "-" (the operation failed)
    note: str = ""
    qemu_version: str | None = None
    libvirt_version: str | None = None


def progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _conn(host: str) -> LibvirtHost:
    return LibvirtHost.connect(host, lifecycle.host_uri(host))


def guest_shell(host: str, vm: str, script: str, *, wait_s: float | None = 120) -> Any:
    """Run ``script`` in the guest through its agent: its pid (``wait_s`` None) or, once it
    ended, its output."""
    with _conn(host) as conn:
        pid = agent(conn, vm, "guest-exec", arguments={
            "path": "/bin/sh", "arg": ["-c", script], "capture-output": True})["pid"]  # fmt: skip
        if wait_s is None:
            return pid
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            status = agent(conn, vm, "guest-exec-status", arguments={"pid": pid})
            if status.get("exited"):
                return base64.b64decode(status.get("out-data", "")).decode()
            time.sleep(0.5)
    raise TimeoutError(f"{script!r} did not end in {wait_s} s")


def start_writer(host: str, vm: str, disk_mib: int, rate_mib_s: float) -> None:
    """Random 1 MiB blocks spread over the whole disk at about ``rate_mib_s`` (a pause
    after each block), until /tmp/stop."""
    script = (f"rm -f /tmp/stop; i=0; while [ ! -e /tmp/stop ]; do dd if=/dev/urandom "
              f"of=/dev/vda bs=1M count=1 seek=$(( (i * 7919) % {disk_mib} )) conv=notrunc "
              f"2>/dev/null; i=$((i + 1)); echo $i > /tmp/count; sleep {1 / rate_mib_s:.3f}; "
              "done")  # fmt: skip
    guest_shell(host, vm, script, wait_s=None)


def written(host: str, vm: str) -> int:
    out = guest_shell(host, vm, "cat /tmp/count 2>/dev/null || echo 0").strip()
    return int(out or 0)


def stop_writer_and_hash(host: str, vm: str) -> str:
    guest_shell(host, vm, "touch /tmp/stop; sleep 2")
    return str(guest_shell(host, vm, "sync; sha256sum /dev/vda", wait_s=900).split()[0])


def offline_sha256(host: str, vm: str, image: Path) -> str:
    """Stop ``vm`` and hash the raw content of ``image`` (qemu-img, outside the guest)."""
    with _conn(host) as conn:
        conn.destroy(vm)
    raw = lab_dir() / f"{vm}-offline.raw"
    try:
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw)],
                       check=True, timeout=900)  # fmt: skip
        digest = hashlib.sha256()
        with raw.open("rb") as f:
            while block := f.read(8 * MIB):
                digest.update(block)
        return digest.hexdigest()
    finally:
        raw.unlink(missing_ok=True)


def outside(host: str, path: str) -> Path:
    """A lab host's path as seen from outside it (its /var/lib/libvirt/images is under the
    lab's directory; the shared pool is the same everywhere)."""
    if path.startswith(HOST_IMAGES + "/"):
        return lab_dir() / "hosts" / host / "lib" / "images" / path.rsplit("/", 1)[1]
    return Path(path)


def disk_path(host: str, vm: str) -> str:
    with _conn(host) as conn:
        (disk,) = [d for d in conn.get_vm(vm).spec.disks if d.target == "vda"]
        path = conn.disk_path(disk) or disk.source  # a file no pool lists yet: its source
    assert path is not None, disk
    return path


def copy_virsh(vm: str) -> tuple[bool, int, int | None, int | None, str]:
    src, dst = lifecycle.host_uri("kvm1"), lifecycle.host_uri("kvm2")
    argv = ["virsh", "-c", src, "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
            "--copy-storage-all", vm, dst, MIGRATION_URI]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    took = round((time.monotonic() - started) * 1000)
    if done.returncode != 0:
        return False, took, None, None, done.stderr.strip()[-160:]
    guests.note_moved(vm, "kvm2")
    conn = libvirt.open(dst)
    try:
        stats = completed_from_stats(
            conn.lookupByName(vm).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        )
    finally:
        conn.close()
    return True, took, stats.downtime_ms, stats.transferred_bytes, ""


def copy_vmferry(vm: str) -> tuple[bool, int, int | None, int | None, str]:
    started = time.monotonic()
    outcome = migrate(vm, "kvm2", MigrationOptions(strategy=Strategy.LIVE, copy_storage=True,
                                                   timeout_s=1800))  # fmt: skip
    took = round((time.monotonic() - started) * 1000)
    r = outcome.result
    return (r.status is JobStatus.COMPLETED, took, r.downtime_ms, r.transferred_bytes,
            r.reason or "")  # fmt: skip


def move_virsh(vm: str) -> tuple[bool, int, int | None, int | None, str]:
    old = disk_path("kvm1", vm)
    new = f"{HOST_IMAGES}/{vm}-moved.qcow2"
    argv = ["virsh", "-c", lifecycle.host_uri("kvm1"), "blockcopy", vm, "vda", new, "--wait",
            "--pivot", "--transient-job", "--format", "qcow2"]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    took = round((time.monotonic() - started) * 1000)
    if done.returncode != 0:
        return False, took, None, None, done.stderr.strip()[-160:]
    outside("kvm1", old).unlink(missing_ok=True)  # as vmferry removes the old volume
    return True, took, None, None, ""


def move_vmferry(vm: str) -> tuple[bool, int, int | None, int | None, str]:
    started = time.monotonic()
    r: MigrationResult = move_storage(vm, "vda", "default", fmt="qcow2", timeout_s=1800)
    took = round((time.monotonic() - started) * 1000)
    return (r.status is JobStatus.COMPLETED, took, None, r.transferred_bytes,
            r.reason or "")  # fmt: skip


def _offline(vm: str, strategy: Strategy) -> tuple[bool, int, int | None, int | None, str]:
    started = time.monotonic()
    options = MigrationOptions(
        strategy=strategy, force=True, shutdown_timeout_s=3, timeout_s=1800
    )  # the lab guest ignores ACPI: --force after 3 s
    outcome = migrate(vm, "kvm2", options)
    took = round((time.monotonic() - started) * 1000)
    r = outcome.result
    rounds = [e.data for e in open_store().get_job(r.job_id).events if "copied_bytes" in e.data]
    sent = sum(int(d["copied_bytes"]) for d in rounds) if rounds else None
    note = ", ".join(f"{'last' if d.get('last') else d['round']}: "
                     f"{int(d['copied_bytes']) / MIB:.0f} MiB" for d in rounds)  # fmt: skip
    if r.status is JobStatus.COMPLETED:
        guests.note_moved(vm, "kvm2")
    return r.status is JobStatus.COMPLETED, took, r.downtime_ms, sent, r.reason or note


def cold_vmferry(vm: str) -> tuple[bool, int, int | None, int | None, str]:
    return _offline(vm, Strategy.COLD)


def incremental_vmferry(vm: str) -> tuple[bool, int, int | None, int | None, str]:
    return _offline(vm, Strategy.WARM_INCREMENTAL)


def wait_for_agent(host: str, vm: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            guest_shell(host, vm, "true", wait_s=30)
            return
        except Exception:  # the guest is still booting: its agent does not answer yet
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


OFFLINE_TOOLS = ("cold", "warm-incremental")
RUNS = {
    ("copy-storage", "virsh"): copy_virsh,
    ("copy-storage", "vmferry"): copy_vmferry,
    ("move-storage", "virsh"): move_virsh,
    ("move-storage", "vmferry"): move_vmferry,
    ("offline", "cold"): cold_vmferry,
    ("offline", "warm-incremental"): incremental_vmferry,
}


def one(operation: str, tool: str, disk_mib: int, rate_mib_s: float) -> Row:
    vm = f"st-{operation.split('-')[0]}-{tool}"
    local = operation in ("copy-storage", "offline")
    progress(f"{operation} by {tool}: a guest with a {disk_mib} MiB disk")
    guests.create_guest(vm, "kvm1", memory_mb=256, working_set_mb=32,
                        disk_pool="local" if local else "shared", data_disk_mb=disk_mib,
                        boot_timeout_s=900)  # fmt: skip
    try:
        start_writer("kvm1", vm, disk_mib, rate_mib_s)
        time.sleep(3)
        before = written("kvm1", vm)
        ok, took, downtime, sent, note = RUNS[(operation, tool)](vm)
        host = "kvm2" if local and ok else "kvm1"
        rebooted = operation == "offline"
        if rebooted and ok:
            wait_for_agent(host, vm)
        during = 0 if rebooted else written(host, vm) - before
        content = "-"
        if ok:
            path = disk_path(host, vm)
            seen = stop_writer_and_hash(host, vm)
            content = "verified" if offline_sha256(host, vm, outside(host, path)) == seen \
                else "DIFFERS"  # fmt: skip
        return Row(operation, tool, disk_mib, ok, took, downtime, sent, during, content, note)
    finally:
        guests.delete_guest(vm)


def table(rows: list[Row]) -> str:
    def ms(v: int | None) -> str:
        return "-" if v is None else f"{v / 1000:.1f} s" if v >= 1000 else f"{v} ms"

    stacks = sorted({f"QEMU {r.qemu_version}, libvirt {r.libvirt_version}" for r in rows})
    lines = [f"Stack: {'; '.join(stacks)}", "",
             "| operation | tool | disk | done | total time | downtime | sent | written during "
             "| content | note |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        sent = "-" if r.transferred_bytes is None else f"{r.transferred_bytes / MIB:.0f} MiB"
        lines.append(f"| {r.operation} | {r.tool} | {r.disk_mib} MiB | "
                     f"{'yes' if r.ok else 'no'} | {ms(r.total_time_ms)} | {ms(r.downtime_ms)} "
                     f"| {sent} | {r.written_during_mib} MiB | {r.content} | "
                     f"{r.note or '-'} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--disk-mib", type=int, default=1024)
    parser.add_argument(
        "--write-mib-s",
        type=float,
        default=4.0,
        help="the guest's writes during the operation (MiB/s, about)",
    )
    parser.add_argument("--operations", default="copy-storage,move-storage")
    parser.add_argument("--tools", default="virsh,vmferry")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the benchmark needs root (it runs the lab)")
    rows: list[Row] = []
    with lab_turn():
        lifecycle.up(2, 400, progress=progress)
        try:
            with _conn("kvm1") as kvm1:
                stack = kvm1.info()
            for operation in args.operations.split(","):
                tools = OFFLINE_TOOLS if operation == "offline" else args.tools.split(",")
                for tool in tools:
                    row = one(operation, tool, args.disk_mib, args.write_mib_s)
                    row.qemu_version = stack.hypervisor_version
                    row.libvirt_version = stack.libvirt_version
                    rows.append(row)
                    progress(f"  -> {asdict(row)}")
        finally:
            lifecycle.down()
    sys.stderr.write(table(rows) + "\n")
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(table(rows))
    return 0 if all(r.ok and r.content == "verified" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
