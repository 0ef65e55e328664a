"""`vmferry import vsphere://SOURCE/VM` into a real lab host: a VM of the vSphere simulator
whose disk is the lab's bootable guest disk (ESXi's shape: a descriptor plus its raw
``-flat.vmdk`` on the simulator's datastore) is stopped through VMware Tools, read from the
datastore over HTTPS, imported to kvm1 with --start, boots, keeps its MAC, and checks its
disk from inside the guest; the source VM is left powered off. `vmferry rollback` of the
import's job then removes it from kvm1 and powers the source VM on again."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest
from support.line_reader import LineReader
from support.vcsim import Vcsim, control, running_vcsim, write_disk
from support.vcsim_disks import (
    DATASTORE,
    add_disk,
    admin,
    attach,
    find_vm,
    make_disk,
    power_state,
    upload,
    wait,
)

from vmferry.lab import client
from vmferry.lab import topology as topo
from vmferry.lab.boot_disk import build_boot_disk
from vmferry.lab.guest_image import build_guest_image, default_cache_dir
from vmferry.lab.imported import host_uri, remove_imported, to_vmdk
from vmferry.lab.state import lab_dir

pytestmark = pytest.mark.lab

VM = "DC0_H0_VM0"
NAME = "imp-vsphere"


def _vmferry(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    """In the module's store (tests/conftest.py), where the lab registered its hosts."""
    env = dict(os.environ)
    if password is not None:
        env["VMFERRY_VSPHERE_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


ADDR = topo.guest_addr(244)  # the cold import's guest: its static address, as Tools say


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Vcsim]:
    workdir = tmp_path / "vcsim"
    workdir.mkdir()
    gateway = topo.guest_addr(1)
    with running_vcsim(workdir, tools_running=(VM,),
                       guest_net=(f"{VM}={ADDR}/24,{gateway},{gateway}",)) as started:  # fmt: skip
        yield started


@pytest.fixture
def cleanup() -> Iterator[None]:
    yield
    remove_imported("kvm1", NAME)


def test_a_running_vsphere_vm_is_imported_boots_and_verifies(
    lab: object, sim: Vcsim, tmp_path: Path, cleanup: None
) -> None:
    addr = ADDR
    raw = tmp_path / "boot.raw"
    digest = build_boot_disk(raw, build_guest_image(default_cache_dir()), size_mb=64, data_mb=8,
                             ip=f"{addr}/24")  # fmt: skip
    vmdk = tmp_path / f"{VM}.vmdk"
    to_vmdk(raw, vmdk, "monolithicFlat")  # VM.vmdk (descriptor) + VM-flat.vmdk
    flat = tmp_path / f"{VM}-flat.vmdk"
    assert flat.is_file()
    with admin(sim) as instance:
        upload(sim, instance, vmdk, f"{VM}/{vmdk.name}")
        upload(sim, instance, flat, f"{VM}/{flat.name}")
        attach(instance, VM, f"{VM}/{vmdk.name}", raw.stat().st_size)
        vm = find_vm(instance, VM)  # a Linux guest: virtio disk and NIC on KVM
        from pyVmomi import vim

        # a Debian guest the simulator knows (its list ends at Debian 10), and the memory
        # the lab guest needs (the simulator's VMs have 32 MiB: it never boots in that)
        wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(guestId="debian10_64Guest", memoryMB=256)))
        mac = next(d.macAddress for d in vm.config.hardware.device
                   if isinstance(d, vim.vm.device.VirtualEthernetCard)).lower()  # fmt: skip
    added = _vmferry("sources", "add", "vc1", sim.vsphere_url(), "--ca", str(sim.ca_file),
                     password=sim.password)  # fmt: skip
    assert added.returncode == 0, added.stderr
    console = lab_dir() / "shared" / "consoles" / f"{NAME}.log"
    console.unlink(missing_ok=True)
    done = _vmferry("import", f"vsphere://vc1/{VM}", "--to", "kvm1", "--name", NAME,
                    "--network-map", "DC0_DVPG0=vmnet", "--storage-pool", topo.SHARED_POOL,
                    "--console-log", str(console), "--virt-type", "qemu",
                    "--convert-guest", "never", "--start", "--json",
                    password=sim.password)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["status"], report["source_format"]) == ("completed", "vsphere")
    assert report["disks"][0]["checksum_match"] is True
    assert report["spec"]["nics"][0]["mac"] == mac
    assert "shutting DC0_H0_VM0 down through VMware Tools" in done.stderr
    text = _wait_console(console, "HB 3")
    assert f"DISK sha256={digest}" in text  # the guest read its whole disk: the same bytes
    assert f"NET eth0 {mac} {addr}/24" in text  # the source's MAC kept
    assert client.echo(addr, count=3)
    assert power_state(sim, VM) == "poweredOff"  # the source is left stopped, not deleted
    assert report["source_stopped"] is True
    # the static address VMware Tools reported is up again, as the guest agent says
    (back,) = report["addresses"]  # the guest's IPv6 link-local address comes too
    assert (back["mac"], back["expected"], back["kept"]) == (mac, [f"{addr}/24"], True)
    assert f"{addr}/24" in back["found"], back
    said = " ".join(done.stderr.split())
    assert f"{mac}: addresses kept (had {addr}/24; has {addr}/24" in said

    # undone: the imported VM and its volume gone from kvm1, then the source powered on
    rolled = _vmferry("rollback", report["job_id"], "--json", password=sim.password)
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["status"] == "rolled-back"
    said = " ".join(rolled.stderr.split())
    assert f"{NAME} powered off on kvm1" in said and f"{NAME} undefined on kvm1" in said
    assert f"removed from kvm1; {VM} powered on again on vSphere" in said, said
    assert power_state(sim, VM) == "poweredOn"
    volumes = [Path(v) for v in report["volumes"]]
    assert volumes and not [v for v in volumes if v.exists()]
    assert not _on_host("kvm1", NAME)

    # imported again, its datastore reads held to 1 MiB/s, and cancelled mid-copy with
    # `vmferry job cancel`: its partial volume removed, nothing defined, the VM running again
    _cancelled_mid_copy(sim, volumes[0])


def _cancelled_mid_copy(sim: Vcsim, volume: Path) -> None:
    env = {**os.environ, "VMFERRY_VSPHERE_PASSWORD": sim.password}
    importing = subprocess.Popen(
        [sys.executable, "-m", "vmferry.cli.main", "import", f"vsphere://vc1/{VM}", "--to",
         "kvm1", "--name", NAME, "--network-map", "DC0_DVPG0=vmnet", "--storage-pool",
         topo.SHARED_POOL, "--virt-type", "qemu", "--convert-guest", "never", "--force",
         "--bandwidth", "1"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        part = volume.with_name(volume.name + ".vmferry-part")  # import_vm.PART_SUFFIX
        deadline = time.monotonic() + 120
        while not part.exists() and importing.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the copy has begun once its partial volume exists
        assert part.exists(), importing.communicate()[1] if importing.poll() is not None else ""
        assert power_state(sim, VM) == "poweredOff"  # powered off (--force), being read
        jobs = json.loads(_vmferry("jobs", "--json").stdout)
        (job,) = [j for j in jobs if j["vm"] == NAME and j["status"] == "running"]
        cancel = _vmferry("job", "cancel", job["id"], "--json")
        assert cancel.returncode == 0, cancel.stderr
        assert json.loads(cancel.stdout)["status"] == "cancelled"
        _out, err = importing.communicate(timeout=120)
    finally:
        if importing.poll() is None:
            importing.kill()
            importing.wait()
    assert importing.returncode == 1, err
    said = " ".join(err.split())
    assert f"cancelled: powering {VM} on again on vSphere" in said, said
    assert f"job {job['id']} was cancelled" in said
    assert power_state(sim, VM) == "poweredOn"
    assert not part.exists() and not volume.exists()
    assert not _on_host("kvm1", NAME)


def _on_host(host: str, name: str) -> bool:
    """Whether ``host`` has a domain ``name``, running or only defined."""
    conn = libvirt.open(host_uri(host))
    try:
        return name in [d.name() for d in conn.listAllDomains(0)]
    finally:
        conn.close()


def _wait_console(path: Path, needle: str, timeout_s: float = 120) -> str:
    import time

    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not on the console within {timeout_s} s:\n{text[-2000:]}")


WARM = "imp-warm"


def _start_import(sim: Vcsim, source: str, name: str,
                  *options: str) -> tuple[Path, subprocess.Popen[str]]:  # fmt: skip
    """``sim`` registered as ``source``, then `vmferry import` of VM0 to kvm1 as ``name``
    (into the shared pool, its console logged, with ``options``) started: the console's
    path and the running command."""
    added = _vmferry("sources", "add", source, sim.vsphere_url(), "--ca", str(sim.ca_file),
                     password=sim.password)  # fmt: skip
    assert added.returncode == 0, added.stderr
    console = lab_dir() / "shared" / "consoles" / f"{name}.log"
    console.unlink(missing_ok=True)
    env = {**os.environ, "VMFERRY_VSPHERE_PASSWORD": sim.password}
    importing = subprocess.Popen(
        [sys.executable, "-m", "vmferry.cli.main", "import", f"vsphere://{source}/{VM}", "--to",
         "kvm1", "--name", name, "--network-map", "DC0_DVPG0=vmnet", "--storage-map",
         f"{DATASTORE}={topo.SHARED_POOL}", "--console-log", str(console), "--virt-type", "qemu",
         "--convert-guest", "never", "--json", *options],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    return console, importing


@pytest.fixture
def warm_cleanup() -> Iterator[None]:
    yield
    remove_imported("kvm1", WARM)


@contextmanager
def _sim_telling(tmp_path: Path, addr: str) -> Iterator[Vcsim]:
    """The simulator, VMware Tools running in VM0 and reporting ``addr`` (the guest's)."""
    workdir = tmp_path / "vcsim-tools"
    workdir.mkdir()
    gateway = topo.guest_addr(1)
    told = f"{VM}={addr}/24,{gateway},{gateway}"
    with running_vcsim(workdir, tools_running=(VM,), guest_net=(told,)) as started:
        yield started


@pytest.fixture
def warm_sim(tmp_path: Path) -> Iterator[Vcsim]:
    """The simulator for the warm import: Tools report the address the guest takes."""
    with _sim_telling(tmp_path, WARM_ADDR) as started:
        yield started


WARM_ADDR = topo.guest_addr(245)


def _warm_disk(sim: Vcsim, tmp_path: Path, addr: str = WARM_ADDR) -> tuple[Path, str]:
    """VM0 made the lab's bootable guest (its address ``addr``) on a flat VMDK, a Linux
    guest of 256 MiB: the raw image (the test's own copy of the disk) and its datastore
    path."""
    raw = tmp_path / "boot.raw"
    build_boot_disk(raw, build_guest_image(default_cache_dir()), size_mb=64, data_mb=8,
                    ip=f"{addr}/24")  # fmt: skip
    vmdk = tmp_path / f"{VM}.vmdk"
    to_vmdk(raw, vmdk, "monolithicFlat")
    with admin(sim) as instance:
        upload(sim, instance, vmdk, f"{VM}/{vmdk.name}")
        upload(sim, instance, tmp_path / f"{VM}-flat.vmdk", f"{VM}/{VM}-flat.vmdk")
        attach(instance, VM, f"{VM}/{vmdk.name}", raw.stat().st_size)
        from pyVmomi import vim

        vm = find_vm(instance, VM)
        wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(guestId="debian10_64Guest", memoryMB=256)))
    return raw, f"[{DATASTORE}] {VM}/{vmdk.name}"


def test_a_warm_import_copies_the_writes_made_while_it_ran_and_boots_with_them(
    lab: object, warm_sim: Vcsim, tmp_path: Path, warm_cleanup: None
) -> None:
    """`--strategy warm`: the disk read while the VM runs, the guest's writes between
    precopies and during the cutover copied as they come (the harness answers
    QueryChangedDiskAreas from them), `vmferry job cutover` stops the VM; on kvm1 the guest
    reads its whole disk at boot and finds the source's last state, byte for byte."""
    raw, disk = _warm_disk(warm_sim, tmp_path)

    def guest_write(offset: int, data: bytes) -> None:  # in the FAT's free space at the end
        write_disk(warm_sim, disk, offset, data)
        with raw.open("r+b") as f:
            f.seek(offset)
            f.write(data)

    console, importing = _start_import(warm_sim, "vcw", WARM, "--start", "--strategy", "warm",
                                       "--precopy-interval", "2")  # fmt: skip
    assert importing.stderr is not None and importing.stdout is not None
    said, printed = LineReader(importing.stderr), LineReader(importing.stdout)
    try:
        begun = said.until(r"job (\w+): `vmferry job cutover", limit_s=120)
        assert begun is not None, "".join(said.seen)
        job_id = begun.group(1)
        guest_write(60 * 2**20 + 100, b"first round " * 1000)  # while the first copy reads
        assert said.until(r"^• precopy 1: ", limit_s=120) is not None, "".join(said.seen)
        guest_write(62 * 2**20, bytes(range(256)) * 1024)
        assert said.until(r"^• precopy 2: ", limit_s=120) is not None, "".join(said.seen)
        guest_write(63 * 2**20 + 512, b"last words" * 10)  # before the cutover stops it
        cut = _vmferry("job", "cutover", job_id)
        assert cut.returncode == 0, cut.stderr
        importing.wait(timeout=300)
    finally:
        if importing.poll() is None:
            importing.kill()
            importing.wait()
    said.rest()
    out = printed.rest()
    stderr = "".join(said.seen)
    assert importing.returncode == 0, stderr
    report = json.loads(out)
    assert report["status"] == "completed" and report["disks"][0]["checksum_match"] is True
    assert [a["kept"] for a in report["addresses"]] == [True]
    assert report["disks"][0]["pool"] == topo.SHARED_POOL  # by --storage-map
    assert "cutover: stopping DC0_H0_VM0" in stderr and "\n• cutover: " in stderr, stderr
    expected = hashlib.sha256(raw.read_bytes()).hexdigest()
    text = _wait_console(console, "HB 3")
    assert f"DISK sha256={expected}" in text  # the guest reads the source's last state
    assert power_state(warm_sim, VM) == "poweredOff"
    with admin(warm_sim) as instance:
        assert find_vm(instance, VM).snapshot is None  # vmferry's snapshots are gone
    shown = json.loads(_vmferry("job", "show", job_id, "--json").stdout)
    kinds = [e["kind"] for e in shown["events"]]
    assert {"warm", "cutover"} <= set(kinds) and shown["status"] == "completed"


@pytest.fixture
def plan_cleanup() -> Iterator[None]:
    yield
    remove_imported("kvm1", VM)


def test_a_plan_imports_a_running_vsphere_vm_warm_and_cuts_over_in_its_window(
    lab: object, warm_sim: Vcsim, tmp_path: Path, plan_cleanup: None
) -> None:
    """A plan with a VM of a vSphere source: `plan create` reads it from the source (memory,
    vCPUs, disk bytes) and makes it a warm import whose cutover falls inside the plan's
    window; `plan run` copies its disk and then its changes while it runs on vSphere (the
    test writes to it meanwhile), and stops it only at the scheduled cutover; on kvm1 it
    boots with its disk proved against the source's last state and its address kept."""
    import time
    from datetime import UTC, datetime, timedelta

    _raw, disk = _warm_disk(warm_sim, tmp_path)
    added = _vmferry("sources", "add", "vcp", warm_sim.vsphere_url(), "--ca",
                     str(warm_sim.ca_file), password=warm_sim.password)  # fmt: skip
    assert added.returncode == 0, added.stderr
    window_s = 30
    start_at = datetime.now(UTC).replace(microsecond=0)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"""\
version: 1
name: from-vsphere
start_at: "{start_at.isoformat()}"
defaults: {{precopy_interval_s: 2}}
hosts:
  - {{name: kvm1, cpus: 16, memory_mb: 8192, link_gbps: 1, virt_type: qemu}}
sources:
  - name: vcp
    network_map: {{DC0_DVPG0: vmnet}}
    storage_map: {{{DATASTORE}: {topo.SHARED_POOL}}}
vms:
  - {{name: {VM}, source: vcp, destination: kvm1}}
windows:
  - {{start: {window_s}, end: 3600}}
""")
    created = _vmferry("plan", "create", str(plan), "--json", password=warm_sim.password)
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    item = doc["items"][0]
    assert (item["strategy"], item["source"], item["destination"]) == ("warm", "vcp", "kvm1")
    assert item["strategy_reason"].startswith("it runs on vSphere source vcp: a warm import")
    cutover_at_s = item["predicted"]["model"]["import"]["cutover_at_s"]
    assert window_s <= cutover_at_s < item["predicted"]["end_s"] <= 3600
    env = {**os.environ, "VMFERRY_VSPHERE_PASSWORD": warm_sim.password}
    running = subprocess.Popen(
        [sys.executable, "-m", "vmferry.cli.main", "plan", "run", doc["id"], "--json"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(4)  # while the first copy reads, or between precopies
        write_disk(warm_sim, disk, 60 * 2**20 + 100, b"first round " * 1000)
        time.sleep(4)
        write_disk(warm_sim, disk, 62 * 2**20, bytes(range(256)) * 1024)
        assert power_state(warm_sim, VM) == "poweredOn"  # before its window: it runs on
        out, err = running.communicate(timeout=600)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 0, err
    ran = json.loads(out)
    assert ran["status"] == "completed", ran
    job = json.loads(_vmferry("job", "show", ran["items"][0]["job_id"], "--json").stdout)
    assert job["status"] == "completed"
    events = job["events"]
    warm = next(e for e in events if e["kind"] == "warm")
    due = start_at + timedelta(seconds=cutover_at_s)
    assert datetime.fromisoformat(warm["data"]["cutover_at"]) == due
    stopping = next(e for e in events if e["message"].startswith("cutover: stopping"))
    assert datetime.fromisoformat(stopping["at"].replace("Z", "+00:00")) >= due
    precopies = [e for e in events if e["message"].startswith("precopy ")]
    assert precopies, [e["message"] for e in events]
    report = next(e["data"] for e in events if e["kind"] == "import" and "status" in e["data"])
    assert report["status"] == "completed" and report["disks"][0]["checksum_match"] is True
    assert [a["kept"] for a in report["addresses"]] == [True]  # it booted, as it was
    assert power_state(warm_sim, VM) == "poweredOff"
    with admin(warm_sim) as instance:
        assert find_vm(instance, VM).snapshot is None
    assert _on_host("kvm1", VM)


LIVE = "imp-live"
LIVE_ADDR = topo.guest_addr(243)
MIB = 2**20
# the data disk, streamed at 1 MiB/s (--bandwidth 2, two disks): well after the agent answers
DATA_MIB = 32
WRITE_AT_MIB = 28  # where the guest writes in it, 1 MiB, ahead of its stream


@pytest.fixture
def live_cleanup() -> Iterator[None]:
    yield
    remove_imported("kvm1", LIVE)


@pytest.fixture
def live_sim(tmp_path: Path) -> Iterator[Vcsim]:
    with _sim_telling(tmp_path, LIVE_ADDR) as started:
        yield started


def test_a_live_import_runs_the_vm_at_once_and_streams_its_disks_through_a_broken_download(
    lab: object, live_sim: Vcsim, tmp_path: Path, live_cleanup: None
) -> None:
    """`--strategy live-import`: the VM stops on vSphere and runs on kvm1 over its datastore
    disks (nbdkit, NBD) while they stream into local overlays. Downloads break mid-stream
    (nbdkit retries them); the guest writes to its data disk while that disk streams; then
    the data disk's nbdkit is killed: it is started again and the stream goes on. The proof
    compares every byte the guest did not write with the datastore's; stopped afterwards,
    each disk on kvm1 is the source's, the data disk plus exactly the guest's write."""
    from vmferry.drivers.guest_agent import AgentError, run_in_guest
    from vmferry.drivers.libvirt_blockcopy import copy_progress
    from vmferry.drivers.libvirt_host import LibvirtHost

    raw, _disk = _warm_disk(live_sim, tmp_path, LIVE_ADDR)
    data_vmdk, _digest = make_disk(tmp_path, "data", "monolithicFlat", size_mib=DATA_MIB)
    data_raw = tmp_path / "data.raw"
    with admin(live_sim) as instance:  # a second disk, which the guest does not read at boot
        upload(live_sim, instance, data_vmdk, f"{VM}/{data_vmdk.name}")
        upload(live_sim, instance, tmp_path / "data-flat.vmdk", f"{VM}/data-flat.vmdk")
        add_disk(instance, VM, f"{VM}/{data_vmdk.name}", DATA_MIB * MIB)
    console, importing = _start_import(live_sim, "vcl", LIVE, "--strategy", "live-import",
                                       "--bandwidth", "2")  # fmt: skip
    assert importing.stderr is not None and importing.stdout is not None
    said, printed = LineReader(importing.stderr), LineReader(importing.stdout)
    written = (b"live-write\n" * (MIB // 11 + 1))[:MIB]
    write = (f"yes live-write | head -c {MIB} | dd of=/dev/vdb bs={MIB} seek={WRITE_AT_MIB} "
             "conv=fsync")  # fmt: skip
    try:
        runs = said.until(r"runs on kvm1 \((\d+) ms after the stop began\)", limit_s=180)
        assert runs is not None, "".join(said.seen)
        served = re.search(r"disk 1: .* \(nbdkit pid (\d+)\)", " ".join("".join(said.seen).split()))
        assert served is not None, "".join(said.seen)
        # the next downloads break after 64 KiB (nbdkit retries them, or the stream breaks)
        control(live_sim, "fault", cut_after=65536, count=8)
        with LibvirtHost.connect("kvm1", host_uri("kvm1")) as kvm1:
            deadline = time.monotonic() + 120
            code = None
            while code is None and time.monotonic() < deadline:
                try:
                    code = run_in_guest(kvm1, LIVE, ["/bin/sh", "-c", write], timeout_s=60)
                except AgentError:
                    time.sleep(1)
            assert code == 0, "".join(said.seen)
            # the write returned while the data disk's stream still ran
            assert copy_progress(kvm1, LIVE, "vdb") is not None, "".join(said.seen)
        os.kill(int(served.group(1)), signal.SIGKILL)  # the data disk's NBD server dies
        assert said.until(r"disk 1: nbdkit started again", limit_s=120), "".join(said.seen)
        importing.wait(timeout=300)
    finally:
        if importing.poll() is None:
            importing.kill()
            importing.wait()
    said.rest()
    stderr = "".join(said.seen)
    assert importing.returncode == 0, stderr
    report = json.loads(printed.rest())
    assert report["status"] == "completed" and report["started"] is True
    live = report["live"]
    assert live["resumes"] >= 1 and "the stream broke" in stderr, stderr
    assert live["bytes_guest_written"] >= MIB, live  # the guest's write: not compared
    sizes = raw.stat().st_size + data_raw.stat().st_size
    assert live["bytes_compared"] + live["bytes_guest_written"] == sizes, live
    assert [d["checksum_match"] for d in report["disks"]] == [True, True]
    assert [a["kept"] for a in report["addresses"]] == [True]
    text = _wait_console(console, "HB 1")
    assert f"DISK sha256={hashlib.sha256(raw.read_bytes()).hexdigest()}" in text
    assert power_state(live_sim, VM) == "poweredOff"  # intact on vSphere, not deleted
    assert _nbdkit_serving(live_sim) == [], "nbdkit left running"
    # the disks on kvm1, once the VM is off: the source's bytes plus exactly the guest's write
    with LibvirtHost.connect("kvm1", host_uri("kvm1")) as kvm1:
        kvm1.destroy(LIVE)
        xml = kvm1.definition_xml(LIVE)
    assert "nbd" not in xml, xml  # no longer on the datastore
    data = bytearray(data_raw.read_bytes())
    data[WRITE_AT_MIB * MIB : (WRITE_AT_MIB + 1) * MIB] = written
    for volume, expected in zip(report["volumes"], (raw.read_bytes(), bytes(data)), strict=True):
        final = tmp_path / "final.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", volume, str(final)],
                       check=True, capture_output=True)  # fmt: skip
        assert hashlib.sha256(final.read_bytes()).digest() == hashlib.sha256(expected).digest()


def _nbdkit_serving(sim: Vcsim) -> list[int]:
    """The nbdkit processes reading from ``sim``'s datastore."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"nbdkit") and any(f":{sim.port}/".encode() in a for a in argv):
            found.append(int(cmdline.parent.name))
    return found
