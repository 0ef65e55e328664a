"""The one end-to-end virt-v2v conversion: a real Debian guest, wrapped as a VMware VM with a
static MAC, imported by `vmferry import --convert-guest always` into a lab host, booted to its
login prompt, with its MAC intact (virt-v2v itself drops it).

Slow (several minutes: virt-v2v runs update-initramfs inside an emulated appliance). The
Debian disk is built once by debootstrap + guestfish and cached (VMFERRY_CACHE or
/var/cache/vmferry/debian-v2v); on a machine without a kernel in /boot, libguestfs gets the
cached Debian cloud kernel through SUPERMIN_KERNEL (vmferry.lab.debian_image).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest

from vmferry.drivers.virt_v2v import libguestfs_env, v2v_available
from vmferry.lab import topology as topo
from vmferry.lab.debian_image import appliance_kernel, build_debian_disk
from vmferry.lab.imported import host_uri, remove_imported, to_vmdk
from vmferry.lab.state import lab_dir

pytestmark = [pytest.mark.lab, pytest.mark.slow]

STATIC_MAC = "00:50:56:01:02:03"
NAME = "v2v-debian"


def _vmx(vmdk: str) -> str:
    return "\n".join([
        '.encoding = "UTF-8"', 'config.version = "8"', 'virtualHW.version = "14"',
        f'displayName = "{NAME}"', 'guestOS = "debian12-64"', 'memSize = "1024"',
        'numvcpus = "1"', 'scsi0.present = "TRUE"', 'scsi0.virtualDev = "pvscsi"',
        'scsi0:0.present = "TRUE"', 'scsi0:0.deviceType = "scsi-hardDisk"',
        f'scsi0:0.fileName = "{vmdk}"', 'ethernet0.present = "TRUE"',
        'ethernet0.virtualDev = "vmxnet3"', 'ethernet0.networkName = "VM Network"',
        'ethernet0.addressType = "static"', f'ethernet0.address = "{STATIC_MAC}"', "",
    ])  # fmt: skip


def test_debian_guest_converted_by_virt_v2v_boots_with_its_mac(lab: object, tmp_path: Path) -> None:
    kernel = appliance_kernel()
    env = libguestfs_env(kernel=kernel)
    reason = v2v_available(kernel)
    assert reason is None, reason
    disk = build_debian_disk()
    vmdk = tmp_path / "debian.vmdk"
    to_vmdk(disk, vmdk)
    vmx = tmp_path / f"{NAME}.vmx"
    vmx.write_text(_vmx(vmdk.name))
    console = lab_dir() / "shared" / "consoles" / f"{NAME}.log"
    console.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "vmferry.cli.main", "import", str(vmx), "--to", "kvm1",
            "--convert-guest", "always", "--network-map", "VM Network=vmnet",
            "--storage-pool", topo.SHARED_POOL, "--virt-type", "qemu",
            "--console-log", str(console), "--start", "--json"]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
        assert report["status"] == "completed"
        assert report["disks"][0]["checksum_match"] is None  # converted: content changed
        ids = {f["id"] for f in report["findings"]}
        assert {"import.convert.virt_v2v", "import.convert.mac_restored"} <= ids
        conn = libvirt.open(host_uri("kvm1"))
        try:
            xml = conn.lookupByName(NAME).XMLDesc(0)
        finally:
            conn.close()
        assert f"<mac address='{STATIC_MAC}'/>" in xml
        assert "bus='virtio'" in xml and "<model type='virtio'/>" in xml
        deadline = time.monotonic() + 300
        text = ""
        while time.monotonic() < deadline and "login:" not in text:
            time.sleep(1)
            text = console.read_text(errors="replace") if console.exists() else ""
        assert "login:" in text, text[-2000:]
    finally:
        remove_imported("kvm1", NAME)
