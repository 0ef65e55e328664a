"""Real VMDKs on the vSphere simulator's datastore, for the vSphere import tests.

:func:`make_disk` writes a raw disk with known content (data, a hole, a pattern) and turns
it into a single-file monolithicSparse VMDK or ESXi's shape (a descriptor plus its raw
``-flat.vmdk``: ``monolithicFlat``); :func:`upload` PUTs a file to the datastore's
``/folder`` URL with a session cookie (the simulator's handler writes it under the
datastore's directory); :func:`attach` points a VM's first disk at it (``ReconfigVM_Task``,
through pyvmomi, as a vSphere admin would). Test-only.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from support.vcsim import Vcsim

MIB = 2**20
DATASTORE = "LocalDS_0"


def make_disk(directory: Path, name: str, subformat: str, size_mib: int = 24) -> tuple[Path, str]:
    """``name``.vmdk (and for monolithicFlat ``name``-flat.vmdk) in ``directory`` from a raw
    disk with known content; the raw disk's sha256."""
    raw = directory / f"{name}.raw"
    with raw.open("wb") as f:
        f.truncate(size_mib * MIB)
        f.write(hashlib.sha256(name.encode()).digest() * (MIB // 32))  # 1 MiB of data
        f.seek(9 * MIB + 4096)
        f.write(bytes(range(256)) * 4096)  # 1 MiB, not cluster-aligned
        f.seek(size_mib * MIB - 512)
        f.write(b"last sector" + bytes(501))
    vmdk = directory / f"{name}.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                    f"subformat={subformat}", str(raw), str(vmdk)],
                   check=True, capture_output=True)  # fmt: skip
    return vmdk, sha256_of(raw)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def virtual_sha256(image: Path, fmt: str, scratch: Path) -> str:
    """The sha256 of what a guest reads in ``image`` (``qemu-img convert`` to raw)."""
    raw = scratch / f"{image.name}.check.raw"
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(raw)],
                   check=True, capture_output=True)  # fmt: skip
    try:
        return sha256_of(raw)
    finally:
        raw.unlink()


@contextmanager
def admin(sim: Vcsim) -> Iterator[Any]:
    """A pyvmomi ServiceInstance logged in to the simulator."""
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    instance = SmartConnect(host=sim.host, port=sim.port, user=sim.user, pwd=sim.password,
                            sslContext=context)  # fmt: skip
    try:
        yield instance
    finally:
        Disconnect(instance)


def cookie_of(instance: Any) -> str:
    raw = str(instance._stub.cookie)
    value = raw.split("vmware_soap_session=", 1)[1].split(";", 1)[0]
    return f"vmware_soap_session={value}"


def datastore_dir(instance: Any) -> Path:
    """Where the simulator keeps LocalDS_0's files on this machine (a large disk is put
    there directly: ``upload`` holds the whole file in memory)."""
    content = instance.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
    try:
        found = next(ds for ds in view.view if ds.name == DATASTORE)
    finally:
        view.Destroy()
    return Path(str(found.info.url))


def upload(sim: Vcsim, instance: Any, local: Path, datastore_path: str) -> None:
    """PUT ``local`` to ``datastore_path`` (inside the datastore) on DC0's LocalDS_0."""
    conn = http.client.HTTPSConnection(
        sim.host, sim.port, context=ssl.create_default_context(cafile=str(sim.ca_file))
    )
    try:
        conn.request("PUT", f"/folder/{quote(datastore_path)}?dcPath=DC0&dsName={DATASTORE}",
                     body=local.read_bytes(), headers={"Cookie": cookie_of(instance)})  # fmt: skip
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200, (answer.status, answer.reason)
    finally:
        conn.close()


def find_vm(instance: Any, name: str) -> Any:
    view = instance.content.viewManager.CreateContainerView(
        instance.content.rootFolder, [vim.VirtualMachine], True
    )
    try:
        return next(vm for vm in view.view if vm.name == name)
    finally:
        view.Destroy()


def wait(task: Any) -> None:
    while task.info.state not in ("success", "error"):
        time.sleep(0.05)
    assert task.info.state == "success", task.info.error


def attach(instance: Any, vm_name: str, datastore_path: str, capacity_bytes: int,
           *, disk_mode: str = "persistent") -> None:  # fmt: skip
    """Point ``vm_name``'s first disk at ``[LocalDS_0] datastore_path``."""
    vm = find_vm(instance, vm_name)
    disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
    disk.backing.fileName = f"[{DATASTORE}] {datastore_path}"
    disk.backing.diskMode = disk_mode
    disk.capacityInKB = capacity_bytes // 1024
    disk.capacityInBytes = capacity_bytes
    change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
    wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))


def add_disk(instance: Any, vm_name: str, datastore_path: str, capacity_bytes: int) -> None:
    """Give ``vm_name`` one more disk, ``[LocalDS_0] datastore_path`` (an ESXi flat disk's
    descriptor, already uploaded), on its first disk's controller."""
    vm = find_vm(instance, vm_name)
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    used = {d.unitNumber for d in disks if d.controllerKey == disks[0].controllerKey}
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=f"[{DATASTORE}] {datastore_path}", diskMode="persistent", thinProvisioned=True
    )
    disk = vim.vm.device.VirtualDisk(
        key=-101, controllerKey=disks[0].controllerKey,
        unitNumber=next(u for u in range(16) if u not in used and u != 7), backing=backing,
        capacityInKB=capacity_bytes // 1024, capacityInBytes=capacity_bytes,
    )  # fmt: skip
    change = vim.vm.device.VirtualDeviceSpec(operation="add", device=disk)
    wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))


def place_disk(sim: Vcsim, directory: Path, vm_name: str, subformat: str) -> str:
    """A disk of that shape made, uploaded into ``vm_name``'s directory and attached as its
    first disk; the sha256 of its content."""
    name = f"{vm_name}-{subformat}"
    vmdk, digest = make_disk(directory, name, subformat)
    with admin(sim) as instance:
        upload(sim, instance, vmdk, f"{vm_name}/{vmdk.name}")
        flat = directory / f"{name}-flat.vmdk"
        if not flat.exists():  # the simulator's reconfigure wants NAME-flat.vmdk to exist
            flat.write_bytes(b"")  # (an empty file: vmferry never reads it for a sparse disk)
        upload(sim, instance, flat, f"{vm_name}/{flat.name}")
        attach(instance, vm_name, f"{vm_name}/{vmdk.name}", 24 * MIB)
    return digest


def power_state(sim: Vcsim, vm_name: str) -> str:
    with admin(sim) as instance:
        return str(find_vm(instance, vm_name).runtime.powerState)
