"""Live import against cold import from vSphere: how long the guest is down, side by side.

The VM is the vSphere simulator's VM0 made the lab's bootable guest (a 64 MiB flat boot
disk, which the guest reads whole at boot, and a data disk of ``--data-mib`` it does not
read), served from the simulator's datastore over HTTPS on loopback. In one run, alternating,
``--repeat`` times each, it is imported into the lab's kvm1 with ``--start``:

- cold: ``vmferry import vsphere://bench/VM0 --force``: stopped, both disks read from the
  datastore and proved, defined, started;
- live: the same with ``--strategy live-import``: stopped, started at once over its
  datastore disks (nbdkit, NBD), the disks streamed in behind it and proved.

``--bandwidth N`` gives both imports ``--bandwidth N`` (a datastore reached over a slower
link: the cold import's reads, the live import's streams; the live guest's own reads
through nbdkit are not capped).

Reported per strategy (median and every run): the guest's downtime, from the moment
vmferry says it stops the VM (its note, read as it comes) to the guest's first heartbeat on
its KVM console (it has booted and read its boot disk whole); vmferry's own figure (from its
stop note to its start note, as a plan records it; a live import's ``live.downtime_ms``);
and the import's whole time. After each run the VM is removed from kvm1 and powered on again
on the simulator.

    sudo .venv/bin/python bench/vsphere_live.py                  # table on stderr, JSON on stdout
    sudo .venv/bin/python bench/vsphere_live.py --bandwidth 64 --repeat 3 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmferry.lab import lifecycle
from vmferry.lab import topology as topo
from vmferry.lab.boot_disk import build_boot_disk
from vmferry.lab.guest_image import build_guest_image, default_cache_dir
from vmferry.lab.imported import remove_imported, to_vmdk
from vmferry.lab.lock import lab_turn
from vmferry.lab.state import lab_dir
from vmferry.service.plan_imports import STOP_NOTE, stop_to_start_ms

MIB = 2**20
VMFERRY = [sys.executable, "-m", "vmferry.cli.main"]
VM = "DC0_H0_VM0"
NAME = "bench-live"
ADDR = topo.guest_addr(246)
STRATEGIES = {"cold": (), "live": ("--strategy", "live-import")}


@contextlib.contextmanager
def _source(tmp: Path, data_mib: int) -> Iterator[tuple[Any, dict[str, str]]]:
    """The simulator with VM0 made the lab guest (boot disk + data disk), registered as
    source ``bench``: the simulator and the environment with its password."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pyVmomi import vim
    from support.vcsim import running_vcsim
    from support.vcsim_disks import add_disk, admin, attach, find_vm, make_disk, upload, wait

    boot = tmp / "boot.raw"
    build_boot_disk(boot, build_guest_image(default_cache_dir()), size_mb=64, data_mb=8,
                    ip=f"{ADDR}/24")  # fmt: skip
    vmdk = tmp / f"{VM}.vmdk"
    to_vmdk(boot, vmdk, "monolithicFlat")
    data, _digest = make_disk(tmp, "data", "monolithicFlat", size_mib=data_mib)
    workdir = tmp / "vcsim"
    workdir.mkdir()
    gateway = topo.guest_addr(1)
    told = (f"{VM}={ADDR}/24,{gateway},{gateway}",)
    with running_vcsim(workdir, tools_running=(VM,), guest_net=told) as sim:
        with admin(sim) as instance:
            for local in (vmdk, tmp / f"{VM}-flat.vmdk", data, tmp / "data-flat.vmdk"):
                upload(sim, instance, local, f"{VM}/{local.name}")
            attach(instance, VM, f"{VM}/{vmdk.name}", boot.stat().st_size)
            add_disk(instance, VM, f"{VM}/{data.name}", data_mib * MIB)
            wait(find_vm(instance, VM).ReconfigVM_Task(
                vim.vm.ConfigSpec(guestId="debian10_64Guest", memoryMB=256)))  # fmt: skip
        env = {**os.environ, "VMFERRY_VSPHERE_PASSWORD": sim.password}
        argv = [*VMFERRY, "sources", "add", "bench", sim.vsphere_url(), "--ca", str(sim.ca_file)]
        added = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if added.returncode != 0:
            raise SystemExit(f"sources add failed: {added.stderr.strip()}")
        try:
            yield sim, env
        finally:
            subprocess.run([*VMFERRY, "sources", "remove", "bench"], capture_output=True,
                           check=False)  # fmt: skip


def _power_on(sim: Any) -> None:
    from support.vcsim_disks import admin, find_vm, wait

    with admin(sim) as instance:
        vm = find_vm(instance, VM)
        if vm.runtime.powerState != "poweredOn":
            wait(vm.PowerOnVM_Task())


def _import(strategy: str, env: dict[str, str], bandwidth: int) -> dict[str, Any]:
    """One import with ``--start``: its figures (see the module)."""
    console = lab_dir() / "shared" / "consoles" / f"{NAME}.log"
    console.unlink(missing_ok=True)
    began = time.monotonic()
    proc = subprocess.Popen(
        [*VMFERRY, "import", f"vsphere://bench/{VM}", "--to", "kvm1", "--name", NAME,
         "--network-map", "DC0_DVPG0=vmnet", "--storage-map", f"LocalDS_0={topo.SHARED_POOL}",
         "--console-log", str(console), "--virt-type", "qemu", "--convert-guest", "never",
         "--force", "--start", "--json", "--bandwidth", str(bandwidth), *STRATEGIES[strategy]],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    said: list[tuple[float, str]] = []
    assert proc.stderr is not None and proc.stdout is not None
    errors = proc.stderr

    def read() -> None:
        for line in errors:  # vmferry's notes: "• shutting ... down", wrapped by Rich
            said.append((time.monotonic(), " ".join(line.lstrip("• ").split())))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    up = None
    while up is None and time.monotonic() - began < 900:
        text = console.read_text(errors="replace") if console.exists() else ""
        if "HB 1" in text:
            up = time.monotonic()
        elif proc.poll() is not None and proc.returncode != 0:
            break
        else:
            time.sleep(0.02)
    out = proc.stdout.read()
    proc.wait(timeout=900)
    ended = time.monotonic()
    reader.join(timeout=10)
    remove_imported("kvm1", NAME)
    if proc.returncode != 0 or up is None:
        raise SystemExit(f"the {strategy} import failed: {' '.join(m for _t, m in said)[-2000:]}")
    report = json.loads(out)
    stop = next(t for t, message in said if STOP_NOTE.match(message))
    figure = (report["live"]["downtime_ms"] if report.get("live")
              else stop_to_start_ms(said))  # fmt: skip
    return {"guest_down_ms": round((up - stop) * 1000), "vmferry_downtime_ms": figure,
            "total_s": round(ended - began, 2), "phases_ms": report.get("phases_ms"),
            "notes": [(round(t - began, 2), message) for t, message in said]}  # fmt: skip


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name, argv in (("qemu", ["qemu-system-x86_64", "--version"]),
                       ("libvirt", ["libvirtd", "--version"]),
                       ("nbdkit", ["nbdkit", "--version"])):  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        found[name] = (done.stdout.splitlines() or ["?"])[0].strip()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data-mib", type=int, default=1024, help="the data disk's size")
    parser.add_argument("--strategies", default="cold,live", help="which rows, in this order")
    parser.add_argument(
        "--bandwidth",
        type=int,
        default=0,
        help="both imports' --bandwidth (MiB/s; 0: none): a slower datastore",
    )
    args = parser.parse_args()
    chosen = [s for s in args.strategies.split(",") if s]
    if not chosen or set(chosen) - set(STRATEGIES):
        sys.exit(f"--strategies {args.strategies!r}: expected cold and/or live")
    if os.geteuid() != 0:
        sys.exit("the benchmark needs root (it runs the lab)")
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    with (
        lab_turn(),
        tempfile.TemporaryDirectory(dir="/var/tmp") as tmp,
        _source(Path(tmp), args.data_mib) as (sim, env),
    ):
        lifecycle.up(2, 400)
        try:
            for _ in range(args.repeat):
                for strategy in chosen:
                    _power_on(sim)
                    rows[strategy].append(_import(strategy, env, args.bandwidth))
        finally:
            remove_imported("kvm1", NAME)
            lifecycle.down()
    result: dict[str, Any] = {"versions": versions(), "boot_disk_mib": 64,
                              "data_disk_mib": args.data_mib,
                              "bandwidth_mib_s": args.bandwidth or None}  # fmt: skip
    for name, runs in rows.items():
        result[name] = {"guest_down_ms": _median(runs, "guest_down_ms"),
                        "vmferry_downtime_ms": _median(runs, "vmferry_downtime_ms"),
                        "total_s": _median(runs, "total_s"), "runs": runs}  # fmt: skip
    cold = result.get("cold", {}).get("guest_down_ms")
    live = result.get("live", {}).get("guest_down_ms")
    result["live_vs_cold_down"] = round(live / cold, 3) if cold and live else None
    if not args.json:
        shown = result["versions"]
        print(f"{shown['qemu']}; {shown['libvirt']}; {shown['nbdkit']}", file=sys.stderr)
        cap = f"--bandwidth {args.bandwidth}" if args.bandwidth else "no --bandwidth"
        print(f"VM: 64 MiB boot disk + {args.data_mib} MiB data disk, {cap}, {args.repeat} "
              "runs each", file=sys.stderr)  # fmt: skip
        print(f"{'':8}{'guest down ms':>15}{'vmferry ms':>12}{'total s':>10}   runs (guest down)",
              file=sys.stderr)  # fmt: skip
        for name in chosen:
            got = result[name]
            runs = " ".join(str(r["guest_down_ms"]) for r in got["runs"])
            print(f"{name:8}{got['guest_down_ms']:>15.0f}{got['vmferry_downtime_ms'] or 0:>12.0f}"
                  f"{got['total_s']:>10.2f}   {runs}", file=sys.stderr)  # fmt: skip
        print(f"live / cold guest downtime: {result['live_vs_cold_down']}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
