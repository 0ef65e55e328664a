"""Import benchmark: `vmferry import` of a VMware disk against plain `qemu-img convert`.

The input is a monolithicSparse VMDK of 8 GiB capacity holding 1 GiB of random data (in
four 256 MiB runs spread over the disk). In one run, alternating, ``--repeat`` times each,
the page cache dropped before each:

- qemu-img: ``qemu-img convert -f vmdk -O qcow2 SRC DST`` into the lab's shared pool, then
  ``sync`` (convert's default cache mode is ``unsafe``: without it the copy is not on disk);
- vmferry: ``vmferry import SRC --to kvm1 --storage-pool lab-shared`` (header checks, the
  copy with the source read once and digested, the copy read back through QEMU and
  digested, its fsync, the domain defined), then the VM removed.

Reported: wall time (median) of both side by side, bytes written (the output's allocated
bytes) against the source's allocated data, vmferry's phases and the rest of its time
(start, the host's facts, the pool probe), and the versions of qemu-img and libvirt.
Targets (issue 12): time at most 1.3x qemu-img's, bytes written at most 1.05x the
allocated bytes.

    sudo .venv/bin/python bench/import.py            # table on stderr, JSON on stdout
    sudo .venv/bin/python bench/import.py --json     # JSON only
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vmferry.lab import lifecycle
from vmferry.lab import topology as topo
from vmferry.lab.imported import remove_imported, shared_pool_dir, to_vmdk

GIB, MIB = 2**30, 2**20
LOCK = Path("/run/vmferry-lab.lock")
VMFERRY = [sys.executable, "-m", "vmferry.cli.main"]


def make_source(directory: Path) -> tuple[Path, int]:
    raw = directory / "src.raw"
    with open(raw, "wb") as f:
        f.truncate(8 * GIB)
        for i in range(4):
            f.seek(i * 2 * GIB + 512 * MIB)
            for _ in range(4):
                f.write(os.urandom(64 * MIB))
    vmdk = to_vmdk(raw, directory / "src.vmdk")
    raw.unlink()
    return vmdk, vmdk.stat().st_blocks * 512


def _settle() -> None:
    """Flush dirty pages and, where allowed, drop the page cache, so runs start alike."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_qemu_img(src: Path, pool: Path) -> tuple[float, int]:
    dst = pool / "bench-qemu-img.qcow2"
    dst.unlink(missing_ok=True)
    _settle()
    started = time.monotonic()
    subprocess.run(
        ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(src), str(dst)], check=True
    )
    os.sync()  # the same durability vmferry gives before it defines the VM
    elapsed = time.monotonic() - started
    written = dst.stat().st_blocks * 512
    dst.unlink()
    return elapsed, written


def run_vmferry(src: Path) -> tuple[float, int, dict[str, int]]:
    _settle()
    started = time.monotonic()
    done = subprocess.run(
        [
            *VMFERRY,
            "import",
            str(src),
            "--to",
            "kvm1",
            "--name",
            "bench-imp",
            "--storage-pool",
            topo.SHARED_POOL,
            "--virt-type",
            "qemu",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"vmferry import failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    remove_imported("kvm1", "bench-imp")
    return elapsed, int(report["disks"][0]["bytes_written"]), dict(report["phases_ms"])


def versions() -> dict[str, str]:
    """The first line of ``qemu-img --version`` and ``libvirtd --version``."""
    found: dict[str, str] = {}
    for name, argv in (("qemu_img", ["qemu-img", "--version"]),
                       ("libvirt", ["libvirtd", "--version"])):  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        found[name] = (done.stdout.splitlines() or ["?"])[0].strip()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the benchmark needs root (it runs the lab)")
    with LOCK.open("a") as lock, tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        src, allocated = make_source(Path(tmp))
        lifecycle.up(2, 400)
        try:
            pool = shared_pool_dir()
            q_times: list[float] = []
            v_times: list[float] = []
            q_bytes = v_bytes = 0
            phases: list[dict[str, int]] = []
            for _ in range(args.repeat):
                t, q_bytes = run_qemu_img(src, pool)
                q_times.append(t)
                t, v_bytes, ph = run_vmferry(src)
                v_times.append(t)
                phases.append(ph)
        finally:
            lifecycle.down()
    q, v = statistics.median(q_times), statistics.median(v_times)
    rest = [round(t * 1000) - sum(ph.values()) for t, ph in zip(v_times, phases, strict=True)]
    median_phases = {
        key: round(statistics.median(ph.get(key, 0) for ph in phases)) for key in phases[0]
    }
    result: dict[str, Any] = {
        "versions": versions(),
        "capacity_bytes": 8 * GIB,
        "allocated_bytes": allocated,
        "qemu_img": {
            "seconds": round(q, 2),
            "runs": [round(x, 2) for x in q_times],
            "bytes_written": q_bytes,
        },
        "vmferry": {
            "seconds": round(v, 2),
            "runs": [round(x, 2) for x in v_times],
            "bytes_written": v_bytes,
            "phases_ms": phases,
            "median_phases_ms": median_phases,
            "rest_ms": rest,
        },
        "time_ratio": round(v / q, 2),
        "bytes_ratio": round(v_bytes / allocated, 3),
    }
    if not args.json:
        stack = result["versions"]
        print(f"{stack['qemu_img']}; {stack['libvirt']}", file=sys.stderr)
        print(f"{'':12}{'seconds':>10}{'runs':>32}{'written MiB':>14}{'x allocated':>13}",
              file=sys.stderr)  # fmt: skip
        for name, secs, runs, written in (("qemu-img", q, q_times, q_bytes),
                                          ("vmferry", v, v_times, v_bytes)):  # fmt: skip
            shown = " ".join(f"{x:.2f}" for x in runs)
            print(f"{name:12}{secs:>10.2f}{shown:>32}{written / MIB:>14.1f}"
                  f"{written / allocated:>13.3f}", file=sys.stderr)  # fmt: skip
        print(
            f"time ratio {v / q:.2f} (target <= 1.3); bytes {v_bytes / allocated:.3f}x "
            f"allocated (target <= 1.05); vmferry's median phases (ms) {median_phases}, "
            f"the rest {statistics.median(rest):.0f} ms",
            file=sys.stderr,
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
