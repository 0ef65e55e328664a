"""Import benchmark: `vmferry import` of a VMware disk against plain `qemu-img convert`.

The input is a monolithicSparse VMDK of 8 GiB capacity holding 1 GiB of random data (in
four 256 MiB runs spread over the disk). In one run, alternating, ``--repeat`` times each,
the page cache dropped before each (``--settle``: see ``SETTLE_S``):

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

With ``--vsphere`` two more rows, alternating with the others: the same content as ESXi
keeps a disk (a descriptor and its 8 GiB ``-flat.vmdk``, sparse on the local disk) imported
from a file (``vmferry import DESCRIPTOR``: read through qemu-nbd, holes skipped) and streamed
from the vSphere simulator's datastore over HTTPS (``vmferry import vsphere://bench/VM`` of
the powered-off VM whose disk it is: HTTP says nothing about holes, so all 8 GiB are read,
the zeros hashed and not written), ``--connections`` range requests at once. The simulator
is the test harness's (tests/support/vcsim, built by ``make install``), on loopback.

    sudo .venv/bin/python bench/import.py            # table on stderr, JSON on stdout
    sudo .venv/bin/python bench/import.py --json     # JSON only
    sudo .venv/bin/python bench/import.py --vsphere --repeat 3
    sudo .venv/bin/python bench/import.py --settle 3   # every run on memory the host took back
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmferry.lab import lifecycle
from vmferry.lab import topology as topo
from vmferry.lab.imported import remove_imported, shared_pool_dir, to_vmdk
from vmferry.lab.lock import lab_turn

GIB, MIB = 2**30, 2**20
VMFERRY = [sys.executable, "-m", "vmferry.cli.main"]


def make_source(directory: Path, flat: bool = False) -> tuple[Path, int, Path | None]:
    """The sparse VMDK, its allocated bytes, and (``flat``) ESXi's descriptor + flat pair
    of the same content."""
    raw = directory / "src.raw"
    with open(raw, "wb") as f:
        f.truncate(8 * GIB)
        for i in range(4):
            f.seek(i * 2 * GIB + 512 * MIB)
            for _ in range(4):
                f.write(os.urandom(64 * MIB))
    vmdk = to_vmdk(raw, directory / "src.vmdk")
    pair = to_vmdk(raw, directory / "esx.vmdk", "monolithicFlat") if flat else None
    raw.unlink()
    return vmdk, vmdk.stat().st_blocks * 512, pair


# Linux in a VM reports the memory it frees to its host 2 s or more after it is freed
# (mm/page_reporting.c), and the host takes it back: a run that allocates it again pays for
# it in system time. With ``--settle S`` each run starts S seconds after the cache was dropped
# (every run on memory the host took back); without it (as before), a run starts right after
# the previous one's pages were freed, and the one of the pair that allocates more page
# cache, or starts later, pays more (docs/performance.md, Import).
SETTLE_S = 0.0


def _settle() -> None:
    """Flush dirty pages and, where allowed, drop the page cache (then wait ``SETTLE_S``),
    so runs start alike."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    time.sleep(SETTLE_S)


def _children_system_s() -> float:
    """System time of the children waited for so far (the kernel's share of a run)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime


SYSTEM_S: dict[str, list[float]] = {"qemu-img": [], "vmferry": []}


def run_qemu_img(src: Path, pool: Path, system: list[float]) -> tuple[float, int]:
    """One convert + sync; its system time appended to ``system``."""
    dst = pool / "bench-qemu-img.qcow2"
    dst.unlink(missing_ok=True)
    _settle()
    before = _children_system_s()
    started = time.monotonic()
    subprocess.run(
        ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(src), str(dst)], check=True
    )
    os.sync()  # the same durability vmferry gives before it defines the VM
    elapsed = time.monotonic() - started
    system.append(_children_system_s() - before)
    written = dst.stat().st_blocks * 512
    dst.unlink()
    return elapsed, written


Run = tuple[float, int, dict[str, int]]  # seconds, bytes written, phases (ms)


def run_vmferry(
    src: Path | str,
    *extra: str,
    env: dict[str, str] | None = None,
    system: list[float] | None = None,
) -> Run:
    """One import; ``system``: where its system time goes."""
    _settle()
    before = _children_system_s()
    started = time.monotonic()
    done = subprocess.run(
        [
            *VMFERRY,
            "import",
            str(src),
            *extra,
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
        env=env,
    )
    elapsed = time.monotonic() - started
    if system is not None:
        system.append(_children_system_s() - before)
    if done.returncode != 0:
        raise SystemExit(f"vmferry import failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    remove_imported("kvm1", "bench-imp")
    return elapsed, int(report["disks"][0]["bytes_written"]), dict(report["phases_ms"])


@contextlib.contextmanager
def _vsphere_source(tmp: Path, pair: Path) -> Iterator[dict[str, Any]]:
    """The simulator with ``pair`` (descriptor + sparse flat extent) as the disk of a
    powered-off VM, registered as source ``bench``: the ref to import and its env."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.vcsim import running_vcsim
    from support.vcsim_disks import admin, attach, find_vm, upload, wait

    vm = "DC0_H0_VM1"
    workdir = tmp / "vcsim"
    workdir.mkdir()
    with running_vcsim(workdir) as sim, admin(sim) as instance:
        upload(sim, instance, pair, f"{vm}/{pair.name}")  # the descriptor, then the extent:
        flat = pair.with_name(pair.stem + "-flat.vmdk")  # copied sparse, not PUT (8 GiB)
        datastore = next(ds for ds in instance.content.rootFolder.childEntity[0].datastore
                         if ds.name == "LocalDS_0")  # fmt: skip
        directory = Path(datastore.info.url) / vm
        subprocess.run(["cp", "--sparse=always", str(flat), str(directory / flat.name)],
                       check=True)  # fmt: skip
        attach(instance, vm, f"{vm}/{pair.name}", 8 * GIB)
        found = find_vm(instance, vm)
        if found.runtime.powerState != "poweredOff":
            wait(found.PowerOffVM_Task())
        env = {**os.environ, "VMFERRY_VSPHERE_PASSWORD": sim.password}
        argv = [*VMFERRY, "sources", "add", "bench", sim.vsphere_url(), "--ca", str(sim.ca_file)]
        added = subprocess.run(argv, env=env, capture_output=True, text=True)
        if added.returncode != 0 and "already" not in added.stderr:
            raise SystemExit(f"sources add failed: {added.stderr.strip()}")
        try:
            yield {"ref": f"vsphere://bench/{vm}", "env": env}
        finally:
            subprocess.run([*VMFERRY, "sources", "remove", "bench"], capture_output=True)


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
    parser.add_argument(
        "--vsphere",
        action="store_true",
        help="also the flat disk from a file and from the simulator's datastore",
    )
    parser.add_argument("--connections", type=int, default=4,
                        help="--vsphere: range requests at once")  # fmt: skip
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds between dropping the cache and each run")  # fmt: skip
    args = parser.parse_args()
    global SETTLE_S
    SETTLE_S = args.settle
    if os.geteuid() != 0:
        sys.exit("the benchmark needs root (it runs the lab)")
    flat_rows: dict[str, list[Run]] = {"file": [], "vsphere": []}
    with (
        lab_turn(),
        tempfile.TemporaryDirectory(dir="/var/tmp") as tmp,
        contextlib.ExitStack() as stack,
    ):
        src, allocated, pair = make_source(Path(tmp), flat=args.vsphere)
        vsphere = None
        if pair is not None:
            vsphere = stack.enter_context(_vsphere_source(Path(tmp), pair))
        lifecycle.up(2, 400)
        try:
            pool = shared_pool_dir()
            q_times: list[float] = []
            v_times: list[float] = []
            q_bytes = v_bytes = 0
            phases: list[dict[str, int]] = []
            for _ in range(args.repeat):
                t, q_bytes = run_qemu_img(src, pool, SYSTEM_S["qemu-img"])
                q_times.append(t)
                t, v_bytes, ph = run_vmferry(src, system=SYSTEM_S["vmferry"])
                v_times.append(t)
                phases.append(ph)
                if pair is not None and vsphere is not None:
                    flat_rows["file"].append(run_vmferry(pair))
                    flat_rows["vsphere"].append(run_vmferry(
                        vsphere["ref"], "--connections", str(args.connections),
                        "--network-map", "*=vmnet",
                        env=vsphere["env"]))  # fmt: skip
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
            "system_s": [round(x, 2) for x in SYSTEM_S["qemu-img"]],
        },
        "vmferry": {
            "seconds": round(v, 2),
            "runs": [round(x, 2) for x in v_times],
            "bytes_written": v_bytes,
            "system_s": [round(x, 2) for x in SYSTEM_S["vmferry"]],
            "phases_ms": phases,
            "median_phases_ms": median_phases,
            "rest_ms": rest,
        },
        "settle_s": args.settle,
        "time_ratio": round(v / q, 2),
        "bytes_ratio": round(v_bytes / allocated, 3),
    }
    if args.vsphere:
        for row, measured in flat_rows.items():
            times = [r[0] for r in measured]
            result[f"flat_{row}"] = {
                "seconds": round(statistics.median(times), 2),
                "runs": [round(x, 2) for x in times],
                "bytes_written": measured[-1][1],
                "median_phases_ms": {key: round(statistics.median(r[2].get(key, 0)
                                                                  for r in measured))
                                     for key in measured[0][2]},
            }  # fmt: skip
        result["connections"] = args.connections
        result["vsphere_vs_file"] = round(
            result["flat_vsphere"]["seconds"] / result["flat_file"]["seconds"], 2
        )
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
        print("system time, median s: " + ", ".join(
            f"{name} {statistics.median(runs):.2f}" for name, runs in SYSTEM_S.items()
        ) + f"; settle {SETTLE_S:g} s", file=sys.stderr)  # fmt: skip
        if args.vsphere:
            for row in ("flat_file", "flat_vsphere"):
                got = result[row]
                shown = " ".join(f"{x:.2f}" for x in got["runs"])
                print(f"{row:12}{got['seconds']:>10.2f}{shown:>32}"
                      f"{got['bytes_written'] / MIB:>14.1f}"
                      f"{got['bytes_written'] / allocated:>13.3f}", file=sys.stderr)  # fmt: skip
            print(f"the flat disk from the datastore ({args.connections} connections) / from "
                  f"a file: {result['vsphere_vs_file']:.2f}x; phases (ms) file "
                  f"{result['flat_file']['median_phases_ms']}, datastore "
                  f"{result['flat_vsphere']['median_phases_ms']}", file=sys.stderr)  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
