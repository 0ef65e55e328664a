"""The end-to-end virt-v2v conversions: a real Debian guest, wrapped as a VMware VM with a
static MAC, imported by `vmferry import --convert-guest always` into a lab host, booted to its
login prompt, with its MAC intact (virt-v2v itself drops it); and the same guest as a VM of
the vSphere simulator, read from its datastore and converted beside it.

Slow (several minutes: virt-v2v runs update-initramfs inside an emulated appliance). The
Debian disk is built once by debootstrap + guestfish and cached (VMFERRY_CACHE or
/var/cache/vmferry/debian-v2v); on a machine without a kernel in /boot, libguestfs gets the
cached Debian cloud kernel through SUPERMIN_KERNEL (vmferry.lab.debian_image).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest
from support.vcsim import Vcsim, running_vcsim
from support.vcsim_disks import admin, attach, datastore_dir, find_vm, wait

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


def test_debian_guests_converted_by_virt_v2v_from_a_vmx_and_from_vsphere_boot_with_their_macs(
    lab: object, tmp_path: Path
) -> None:
    """Two imports side by side (virt-v2v is the slow part, and each runs one appliance
    vCPU): a VMX with a static MAC (`-i vmx`), and the same Debian disk as a VM of the
    vSphere simulator read from its datastore, proved in the workdir, then converted from
    it (`-i libvirtxml`); both boot on kvm1 to a login prompt with their MACs."""
    kernel = appliance_kernel()
    env = libguestfs_env(kernel=kernel)
    reason = v2v_available(kernel)
    assert reason is None, reason
    disk = build_debian_disk()
    vmdk = tmp_path / "debian.vmdk"
    to_vmdk(disk, vmdk)
    vmx = tmp_path / f"{NAME}.vmx"
    vmx.write_text(_vmx(vmdk.name))
    (tmp_path / "sim").mkdir()
    with running_vcsim(tmp_path / "sim") as sim:
        mac = _vsphere_vm(sim, disk)
        added = subprocess.run(
            [sys.executable, "-m", "vmferry.cli.main", "sources", "add", "vcv",
             sim.vsphere_url(), "--ca", str(sim.ca_file)],
            env={**os.environ, "VMFERRY_VSPHERE_PASSWORD": sim.password},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        from_vsphere = [f"vsphere://vcv/{VSPHERE_VM}", "--name", FROM_VSPHERE,
                        "--network-map", "DC0_DVPG0=vmnet"]  # fmt: skip
        both = {NAME: [str(vmx)], FROM_VSPHERE: from_vsphere}
        running = {}
        for name, source in both.items():
            console = lab_dir() / "shared" / "consoles" / f"{name}.log"
            console.unlink(missing_ok=True)
            argv = [sys.executable, "-m", "vmferry.cli.main", "import", *source, "--to", "kvm1",
                    "--convert-guest", "always", "--network-map", "VM Network=vmnet",
                    "--storage-pool", topo.SHARED_POOL, "--virt-type", "qemu",
                    "--console-log", str(console), "--start", "--json"]  # fmt: skip
            running[name] = subprocess.Popen(
                argv, env={**env, "VMFERRY_VSPHERE_PASSWORD": sim.password},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        try:
            done = {name: proc.communicate(timeout=1800) for name, proc in running.items()}
            for name, proc in running.items():
                assert proc.returncode == 0, done[name][1][-3000:]
                report = json.loads(done[name][0])
                assert report["status"] == "completed"
                assert report["disks"][0]["checksum_match"] is None  # converted: content changed
                ids = {f["id"] for f in report["findings"]}
                assert "import.convert.virt_v2v" in ids
            assert "import.convert.mac_restored" in {
                f["id"] for f in json.loads(done[NAME][0])["findings"]}  # fmt: skip
            fetched = done[FROM_VSPHERE][1]
            assert "disk 0: proved equal to the datastore's before the conversion" in fetched
            assert "converting the guest with virt-v2v" in fetched
            for name, want in ((NAME, STATIC_MAC), (FROM_VSPHERE, mac)):
                conn = libvirt.open(host_uri("kvm1"))
                try:
                    xml = conn.lookupByName(name).XMLDesc(0)
                finally:
                    conn.close()
                assert f"<mac address='{want}'/>" in xml
                assert "bus='virtio'" in xml and "<model type='virtio'/>" in xml
            for name in both:
                console = lab_dir() / "shared" / "consoles" / f"{name}.log"
                deadline = time.monotonic() + 300
                text = ""
                while time.monotonic() < deadline and "login:" not in text:
                    time.sleep(1)
                    text = console.read_text(errors="replace") if console.exists() else ""
                assert "login:" in text, text[-2000:]
        finally:
            for proc in running.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for name in both:
                remove_imported("kvm1", name)


FROM_VSPHERE = "v2v-vsphere"
VSPHERE_VM = "DC0_H0_VM1"


def _vsphere_vm(sim: Vcsim, disk: Path) -> str:
    """The simulator's VM1 made the Debian guest: its disk a flat VMDK written straight into
    the datastore's directory, a Linux guest of 1 GiB, powered off (read as it is); its MAC."""
    from pyVmomi import vim

    with admin(sim) as instance:
        folder = datastore_dir(instance) / VSPHERE_VM
        folder.mkdir(parents=True, exist_ok=True)
        to_vmdk(disk, folder / "debian.vmdk", "monolithicFlat")
        attach(instance, VSPHERE_VM, f"{VSPHERE_VM}/debian.vmdk", disk.stat().st_size)
        vm = find_vm(instance, VSPHERE_VM)
        wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(guestId="debian10_64Guest", memoryMB=1024)))
        wait(vm.PowerOffVM_Task())
        nic = next(d for d in vm.config.hardware.device
                   if isinstance(d, vim.vm.device.VirtualEthernetCard))  # fmt: skip
        return str(nic.macAddress).lower()
