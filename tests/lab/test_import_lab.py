"""`vmferry import` against real lab hosts: VMware-style VMX+VMDK and an OVA built from a
bootable disk with known content, imported, booted, and checked from inside the guest (its
disk checksum, its heartbeat, its MAC) and from the client namespace; hostile inputs
refused with nothing written; an interrupted import leaves nothing behind."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import libvirt
import pytest

from vmferry.lab import client
from vmferry.lab import topology as topo
from vmferry.lab.boot_disk import build_boot_disk
from vmferry.lab.guest_image import build_guest_image, default_cache_dir
from vmferry.lab.imported import host_uri, remove_imported, shared_pool_dir, to_vmdk
from vmferry.lab.state import lab_dir

pytestmark = pytest.mark.lab

VMFERRY = [sys.executable, "-m", "vmferry.cli.main"]
HOSTILE = Path(__file__).resolve().parent.parent / "data" / "import" / "hostile"


def _vmferry(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VMFERRY, *args], capture_output=True, text=True, timeout=timeout)


def _pool() -> Path:
    return shared_pool_dir()


def _consoles() -> Path:
    return lab_dir() / "shared" / "consoles"


DiskFactory = Callable[[int], tuple[Path, str, str]]


@pytest.fixture(scope="module")
def make_disk(lab: object, tmp_path_factory: pytest.TempPathFactory) -> DiskFactory:
    """``make_disk(octet)``: a bootable raw disk (the lab guest on FAT) whose guest takes
    198.18.2.<octet>, with its SHA-256 and that address. Each test boots its own address, so
    no neighbour cache remembers an earlier guest's MAC for it."""
    image = build_guest_image(default_cache_dir())

    def make(octet: int) -> tuple[Path, str, str]:
        addr = topo.guest_addr(octet)
        path = tmp_path_factory.mktemp("bootdisk") / "boot.raw"
        digest = build_boot_disk(path, image, size_mb=64, data_mb=8, ip=f"{addr}/24")
        return path, digest, addr

    return make


@pytest.fixture
def cleanup() -> Iterator[list[tuple[str, str]]]:
    """(host, vm) pairs to destroy and undefine, with their volumes, after the test."""
    made: list[tuple[str, str]] = []
    yield made
    for host, name in made:
        remove_imported(host, name)


def _vmx(directory: Path, vmdk: str, mac: str, name: str) -> Path:
    path = directory / f"{name}.vmx"
    path.write_text(
        '.encoding = "UTF-8"\n'
        'config.version = "8"\n'
        'virtualHW.version = "19"\n'
        f'displayName = "{name}"\n'
        'guestOS = "debian12-64"\n'
        'numvcpus = "1"\n'
        'memsize = "256"\n'
        'scsi0.present = "TRUE"\n'
        'scsi0.virtualDev = "pvscsi"\n'
        'scsi0:0.present = "TRUE"\n'
        f'scsi0:0.fileName = "{vmdk}"\n'
        'ethernet0.present = "TRUE"\n'
        'ethernet0.virtualDev = "vmxnet3"\n'
        'ethernet0.networkName = "VM Network"\n'
        'ethernet0.addressType = "static"\n'
        f'ethernet0.address = "{mac}"\n'
    )
    return path


def _ova(directory: Path, vmdk: Path, mac: str, name: str, capacity: int) -> Path:
    ovf = directory / f"{name}.ovf"
    ovf.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
 xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
 xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="{vmdk.name}" ovf:id="file1" ovf:size="{vmdk.stat().st_size}"/>
  </References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1"
     ovf:fileRef="file1"
     ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>networks</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>a lab guest</Info><Name>{name}</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian12_64Guest"><Info>os</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection><Info>hardware</Info>
      <Item><rasd:ElementName>1 vCPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>256 MB</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>SCSI 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>{mac}</rasd:Address><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>nic</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
""")
    manifest = directory / f"{name}.mf"
    lines = [f"SHA256({p.name})= {hashlib.sha256(p.read_bytes()).hexdigest()}" for p in (ovf, vmdk)]
    manifest.write_text("\n".join(lines) + "\n")
    ova = directory / f"{name}.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member in (ovf, manifest, vmdk):
            tar.add(member, arcname=member.name)
    return ova


def _wait_console(path: Path, needle: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not on the console within {timeout_s} s:\n{text[-2000:]}")


def _import_and_boot(
    source: Path, host: str, name: str, cleanup: list[tuple[str, str]]
) -> tuple[dict[str, object], str]:
    console = _consoles() / f"{name}.log"
    console.unlink(missing_ok=True)
    cleanup.append((host, name))
    done = _vmferry(
        "import",
        str(source),
        "--to",
        host,
        "--name",
        name,
        "--network-map",
        "VM Network=vmnet",
        "--storage-pool",
        topo.SHARED_POOL,
        "--console-log",
        str(console),
        "--virt-type",
        "qemu",
        "--start",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    text = _wait_console(console, "HB 3")
    return report, text


def _content_bytes(raw: Path, block: int = 64 * 1024) -> int:
    """Bytes of ``raw`` in ``block``-sized blocks that are not all zero: what a sparse copy
    has to write (the guest's kernel and initramfs, the data file, the FAT)."""
    zero = bytes(block)
    total = 0
    with open(raw, "rb") as f:
        while chunk := f.read(block):
            total += len(chunk) if chunk != zero[: len(chunk)] else 0
    return total


def _check_guest(
    report: dict[str, object], console: str, digest: str, addr: str, mac: str, raw: Path
) -> None:
    assert report["status"] == "completed"
    disks = report["disks"]
    assert isinstance(disks, list) and len(disks) == 1
    assert disks[0]["checksum_match"] is True
    spec = report["spec"]
    assert isinstance(spec, dict) and spec["nics"][0]["mac"] == mac
    assert spec["nics"][0]["model"] == "vmxnet3" and spec["disks"][0]["bus"] == "pvscsi"
    # the guest read its whole disk and got the bytes the test wrote
    assert f"DISK sha256={digest}" in console
    # the guest's own view of its NIC: the source's MAC, the address the disk configured
    assert f"NET eth0 {mac} {addr}/24" in console
    assert client.echo(addr, count=3)  # its service answers on the VM network
    # sparse: only the disk's content is written (its size follows the guest's kernel and
    # initramfs), give or take the target format's metadata, never its 64 MiB capacity
    content = _content_bytes(raw)
    assert content < 48 * 2**20
    assert disks[0]["bytes_written"] <= content + 2 * 2**20


def test_vmx_with_vmdk_imports_boots_and_verifies(
    make_disk: DiskFactory, tmp_path: Path, cleanup: list[tuple[str, str]]
) -> None:
    raw, digest, addr = make_disk(241)
    vmdk = tmp_path / "imp-vmx.vmdk"
    to_vmdk(raw, vmdk, "monolithicSparse")
    mac = "00:50:56:3f:00:41"
    vmx = _vmx(tmp_path, vmdk.name, mac, "imp-vmx")
    report, console = _import_and_boot(vmx, "kvm1", "imp-vmx", cleanup)
    assert report["source_format"] == "vmx"
    _check_guest(report, console, digest, addr, mac, raw)
    conn = libvirt.open(host_uri("kvm1"))
    try:
        xml = conn.lookupByName("imp-vmx").XMLDesc(0)
    finally:
        conn.close()
    assert f"<mac address='{mac}'/>" in xml and "bus='virtio'" in xml


def test_ova_imports_boots_and_verifies(
    make_disk: DiskFactory, tmp_path: Path, cleanup: list[tuple[str, str]]
) -> None:
    raw, digest, addr = make_disk(242)
    vmdk = tmp_path / "imp-ova-disk1.vmdk"
    to_vmdk(raw, vmdk, "streamOptimized")
    mac = "00:50:56:3f:00:42"
    ova = _ova(tmp_path, vmdk, mac, "imp-ova", raw.stat().st_size)
    report, console = _import_and_boot(ova, "kvm2", "imp-ova", cleanup)
    assert report["source_format"] == "ova"
    _check_guest(report, console, digest, addr, mac, raw)
    # the import is a job; `vmferry rollback` of it removes the VM and its volumes from kvm2
    job_id = str(report["job_id"])
    volumes = [Path(str(v)) for v in report["volumes"]]  # type: ignore[attr-defined]
    assert volumes and all(v.parent == _pool() and v.exists() for v in volumes)
    shown = json.loads(_vmferry("job", "show", job_id, "--json").stdout)
    assert (shown["kind"], shown["status"], shown["vm"]) == ("import", "completed", "imp-ova")
    done = _vmferry("rollback", job_id, "--json")
    assert done.returncode == 0, done.stderr
    rolled = json.loads(done.stdout)
    assert (rolled["status"], rolled["vm"]) == ("rolled-back", "imp-ova"), rolled
    conn = libvirt.open(host_uri("kvm2"))
    try:
        assert "imp-ova" not in [d.name() for d in conn.listAllDomains(0)]
    finally:
        conn.close()
    assert not [v for v in volumes if v.exists()]
    again = json.loads(_vmferry("rollback", job_id, "--json").stdout)
    assert again["status"] == "already-rolled-back", again


def test_dry_run_and_blocked_import_change_nothing(make_disk: DiskFactory) -> None:
    raw, _, _ = make_disk(243)
    before = sorted(p.name for p in _pool().iterdir())
    dry = _vmferry(
        "import",
        str(raw),
        "--to",
        "kvm1",
        "--storage-pool",
        topo.SHARED_POOL,
        "--mac",
        "00:50:56:3f:00:43",
        "--dry-run",
        "--json",
    )
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["status"] == "dry-run" and "<domain" in report["domain_xml"]
    # the bare image's NIC has no network of its own: a blocker until mapped
    assert "import.network.unmapped" in {f["id"] for f in report["findings"]}
    blocked = _vmferry(
        "import",
        str(raw),
        "--to",
        "kvm1",
        "--storage-pool",
        topo.SHARED_POOL,
        "--mac",
        "00:50:56:3f:00:43",
        "--json",
    )
    assert blocked.returncode == 3, blocked.stderr
    assert json.loads(blocked.stdout)["status"] == "failed"
    assert sorted(p.name for p in _pool().iterdir()) == before


def _corpus_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_corpus", HOSTILE / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hostile_inputs_are_refused_with_nothing_written(lab: object, tmp_path: Path) -> None:
    """The whole corpus through the real command: exit 2, one error line, no traceback, no
    file in the pool, no VM on the host. Four commands at a time (each is a process that
    spends most of its time starting Python), as users' scripts may run them."""
    cases = json.loads((HOSTILE / "cases.json").read_text())
    before = sorted(p.name for p in _pool().iterdir())

    paths = [_corpus_module().build_generated(c["file"], tmp_path) if c.get("generated")
             else HOSTILE / c["file"] for c in cases]  # fmt: skip

    def refuse(path: Path) -> subprocess.CompletedProcess[str]:
        return _vmferry("import", str(path), "--to", "kvm1", "--storage-pool",
                        topo.SHARED_POOL, "--network-map", "*=vmnet")  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(refuse, paths))
    for case, done in zip(cases, outcomes, strict=True):
        assert done.returncode == 2, (case, done.stderr)
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("vmferry:")]
        assert len(errors) == 1 and case["refused_because"] in errors[0], (case, done.stderr)
        assert "Traceback" not in done.stderr
    assert sorted(p.name for p in _pool().iterdir()) == before
    conn = libvirt.open(host_uri("kvm1"))
    try:
        assert conn.listAllDomains(0) == []
    finally:
        conn.close()


def test_interrupted_import_leaves_nothing(lab: object, tmp_path: Path) -> None:
    """Ctrl-C while a disk is being copied: the partial volume is removed, nothing defined."""
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.truncate(2 * 2**30)
        for i in range(6):  # 6 x 128 MiB of data spread over the disk
            f.seek(i * 300 * 2**20)
            f.write(os.urandom(128 * 2**20))
    before = sorted(p.name for p in _pool().iterdir())
    proc = subprocess.Popen(
        [
            *VMFERRY,
            "import",
            str(big),
            "--to",
            "kvm1",
            "--name",
            "imp-int",
            "--storage-pool",
            topo.SHARED_POOL,
            "--virt-type",
            "qemu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As at a terminal: SIGINT with its default action. A suite started in the background
        # by a non-interactive shell (`make test &`, a CI runner) inherits SIGINT ignored, and
        # Python then never raises KeyboardInterrupt: the import ran to its end (seen).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(_pool().glob("imp-int-*.vmferry-part")):
        time.sleep(0.02)
    assert list(_pool().glob("imp-int-*.vmferry-part")), "the copy never started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert sorted(p.name for p in _pool().iterdir()) == before
    conn = libvirt.open(host_uri("kvm1"))
    try:
        assert "imp-int" not in [d.name() for d in conn.listAllDomains(0)]
    finally:
        conn.close()


def test_a_copy_that_fails_its_proof_is_refused_with_nothing_left(
    make_disk: DiskFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proof can fail: one 4 KiB block of the copy changes between its write and its
    read-back (a fault injected into the real import, run in this process). The import
    fails in one line naming where, exit 4, the partial volume removed, nothing defined."""
    from vmferry.drivers import verified_copy
    from vmferry.imports.mapping import ImportOptions
    from vmferry.service.import_vm import ImportFailedError, ImportRequest, import_vm
    from vmferry.sources import ImageOverrides

    raw, _, _ = make_disk(244)
    vmdk = to_vmdk(raw, tmp_path / "imp-bad.vmdk")
    real = verified_copy.copy_with_digest

    def copy_then_corrupt(source: Path, fmt: str, target: Path, **kw: Any) -> Any:
        result = real(source, fmt, target, **kw)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 4M 4k", str(target)],
                       check=True, capture_output=True)  # fmt: skip
        return result

    monkeypatch.setattr(verified_copy, "copy_with_digest", copy_then_corrupt)
    before = sorted(p.name for p in _pool().iterdir())
    request = ImportRequest(
        vmdk,
        "kvm1",
        ImportOptions(name="imp-bad", network_map={"*": "vmnet"}, storage_pool=topo.SHARED_POOL),
        overrides=ImageOverrides(name="imp-bad", nic_macs=("00:50:56:3f:00:44",)),
        virt_type="qemu",
    )
    with pytest.raises(ImportFailedError) as failed:
        import_vm(request)
    assert failed.value.exit_code == 4
    assert failed.value.message == (
        "import of imp-bad failed: disk 0: the copy of imp-bad.vmdk differs from it in the GiB "
        "at offset 0; nothing was defined"
    )
    assert sorted(p.name for p in _pool().iterdir()) == before
    conn = libvirt.open(host_uri("kvm1"))
    try:
        assert "imp-bad" not in [d.name() for d in conn.listAllDomains(0)]
    finally:
        conn.close()
