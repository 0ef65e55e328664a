"""Pre-flight findings of an import, in the same shape as the live-migration ones.

``evaluate`` is pure: the same source, plan and destination always give the same findings,
blockers first.
"""

from __future__ import annotations

from vmferry.imports.mapping import ImportPlan, PlannedDisk, valid_name
from vmferry.imports.placement_settings import placement_findings
from vmferry.model.finding import Finding, Severity
from vmferry.model.import_target import DestinationFacts
from vmferry.model.source_vm import Firmware, SourceVm

#: Guest families vmferry's import supports (virt-v2v's own list is the same two).
SUPPORTED_FAMILIES = ("linux", "windows")

B, W, INFO = Severity.BLOCKER, Severity.WARNING, Severity.INFO


def evaluate(
    vm: SourceVm,
    plan: ImportPlan,
    dest: DestinationFacts,
    *,
    v2v_missing: str | None = None,
) -> list[Finding]:
    """Every finding for importing ``vm`` as ``plan`` onto ``dest``.

    ``v2v_missing`` is why virt-v2v cannot run here (``None`` when it can).
    """
    out: list[Finding] = []
    out += _name(plan, dest)
    out += _storage(plan, dest)
    out += _networks(plan, dest)
    out += _firmware(plan, dest)
    out += _guest(vm, plan, v2v_missing)
    out += _devices(vm, plan)
    out += placement_findings(vm.placement)
    out += [
        Finding(
            "import.source.unmapped",
            INFO,
            w,
            "Check the source VM for a setting that matters on KVM.",
        )
        for w in vm.warnings
    ]
    order = {B: 0, W: 1, INFO: 2}
    return sorted(out, key=lambda f: order[f.severity])


def _name(plan: ImportPlan, dest: DestinationFacts) -> list[Finding]:
    if not valid_name(plan.name):
        return [
            Finding(
                "import.name.invalid",
                B,
                f"'{plan.name}' is not a valid VM name",
                "Pass --name with letters, digits, '.', '_' or '-'.",
            )
        ]
    if plan.name in dest.domain_names:
        return [
            Finding(
                "import.name.exists",
                B,
                f"a VM named '{plan.name}' already exists on {dest.host}",
                "Pass --name with another name, or remove the existing VM.",
            )
        ]
    return []


def _storage(plan: ImportPlan, dest: DestinationFacts) -> list[Finding]:
    """Each pool the disks go to, checked with the disks it takes; a disk whose datastore
    --storage-map does not name is a blocker."""
    out: list[Finding] = []
    pools: dict[str, list[PlannedDisk]] = {}
    for disk in plan.disks:
        if disk.pool is None:
            out.append(Finding(
                "import.storage.unmapped", B,
                f"disk {disk.index} ({disk.source_path}) is on datastore "
                f"'{disk.source_datastore or '?'}', which --storage-map does not name",
                f"Add --storage-map '{disk.source_datastore or '*'}=POOL' (or '*=POOL').",
            ))  # fmt: skip
        else:
            pools.setdefault(disk.pool, []).append(disk)
    if not plan.disks:
        pools[plan.pool] = []
    for name, disks in pools.items():
        out += _pool(name, disks, dest)
    return out


def _pool(name: str, disks: list[PlannedDisk], dest: DestinationFacts) -> list[Finding]:
    pool = dest.pools.get(name)
    if pool is None:
        return [
            Finding(
                "import.pool.missing",
                B,
                f"storage pool '{name}' does not exist on {dest.host}",
                "Pass --storage-pool (or --storage-map) with one of: "
                + (", ".join(sorted(dest.pools)) or "(none)")
                + ".",
            )
        ]
    out: list[Finding] = []
    if not pool.active:
        out.append(
            Finding(
                "import.pool.inactive",
                B,
                f"storage pool '{pool.name}' is not active",
                f"Start it: virsh pool-start {pool.name}.",
            )
        )
    if pool.path is None:
        out.append(
            Finding(
                "import.pool.not_directory",
                B,
                f"storage pool '{pool.name}' has no directory to write into",
                "Use a directory (dir, fs, netfs) pool.",
            )
        )
    elif pool.reachable is False:
        out.append(
            Finding(
                "import.pool.unreachable",
                B,
                f"storage pool '{pool.name}' ({pool.path}) on {dest.host} is not the "
                "directory of that name where vmferry runs",
                "Run vmferry on the destination host, or import into a pool on "
                "storage shared with this machine.",
            )
        )
    allocated = sum(d.allocated_bytes or d.capacity_bytes for d in disks)
    capacity = sum(d.capacity_bytes for d in disks)
    if allocated > pool.available_bytes:
        out.append(
            Finding(
                "import.disk.space",
                B,
                f"the disks hold {_gib(allocated)} but pool '{pool.name}' has "
                f"{_gib(pool.available_bytes)} free",
                "Free space in the pool or choose another with --storage-pool.",
            )
        )
    elif capacity > pool.available_bytes:
        out.append(
            Finding(
                "import.disk.overcommit",
                W,
                f"the disks may grow to {_gib(capacity)}; pool '{pool.name}' has "
                f"{_gib(pool.available_bytes)} free",
                "Watch the pool's free space as the guest writes.",
            )
        )
    return out


def _networks(plan: ImportPlan, dest: DestinationFacts) -> list[Finding]:
    out: list[Finding] = []
    for i, nic in enumerate(plan.nics):
        label = f"NIC {i} ({nic.mac or 'no MAC'})"
        source = nic.source_network or "(none)"
        if nic.network is None:
            out.append(
                Finding(
                    "import.network.unmapped",
                    B,
                    f"{label} is on network '{source}', which is not mapped and does "
                    f"not exist on {dest.host}",
                    f"Pass --network-map '{source}=<network>' with one of: "
                    + (", ".join(sorted(dest.networks)) or "(none)")
                    + ".",
                )
            )
        elif nic.network not in dest.networks:
            out.append(
                Finding(
                    "import.network.missing",
                    B,
                    f"{label} maps to network '{nic.network}', which does not exist on {dest.host}",
                    "Create it or map to one of: "
                    + (", ".join(sorted(dest.networks)) or "(none)")
                    + ".",
                )
            )
        if nic.mac is None:
            out.append(
                Finding(
                    "import.nic.no_mac",
                    INFO,
                    f"{label} has no MAC in the source",
                    "libvirt generates one; the guest sees a new NIC.",
                )
            )
    return out


def _firmware(plan: ImportPlan, dest: DestinationFacts) -> list[Finding]:
    if plan.firmware is not Firmware.EFI:
        return []
    out: list[Finding] = []
    if not dest.efi_loader:
        out.append(
            Finding(
                "import.firmware.efi_missing",
                B,
                f"the VM boots with EFI and {dest.host} has no OVMF firmware",
                "Install the ovmf package on the destination.",
            )
        )
    else:
        out.append(
            Finding(
                "import.firmware.efi",
                INFO,
                "the VM boots with EFI: it gets OVMF and a fresh NVRAM; boot entries "
                "are found again from the EFI system partition",
                "If it does not boot, add the boot entry in the OVMF menu.",
            )
        )
    if plan.secure_boot:
        if not dest.secure_boot_loader:
            out.append(
                Finding(
                    "import.firmware.secure_boot_missing",
                    B,
                    f"secure boot is on and {dest.host} has no secure-boot OVMF",
                    "Install ovmf with the secure-boot variants, or turn secure "
                    "boot off in the source.",
                )
            )
        else:
            out.append(
                Finding(
                    "import.firmware.secure_boot",
                    W,
                    "secure boot is on: the VM gets Microsoft's keys in a new NVRAM; "
                    "BitLocker or a TPM-sealed secret will ask for its recovery key",
                    "Have the recovery keys at hand before the first boot.",
                )
            )
    return out


def _guest(vm: SourceVm, plan: ImportPlan, v2v_missing: str | None) -> list[Finding]:
    out: list[Finding] = []
    family = vm.guest_os.family
    if family not in SUPPORTED_FAMILIES:
        out.append(
            Finding(
                "import.guest.unsupported",
                W,
                f"guest OS '{vm.guest_os.id or family}' is outside the supported "
                "list (Linux, Windows)",
                "It is imported with SATA and e1000e; check that it boots.",
            )
        )
    if plan.convert_guest:
        if v2v_missing is not None:
            out.append(
                Finding(
                    "import.convert.unavailable",
                    B,
                    f"the guest needs conversion and virt-v2v cannot run: {v2v_missing}",
                    "Install virt-v2v, nbdkit and libnbd-bin, or pass "
                    "--convert-guest never (it then boots on SATA/e1000e).",
                )
            )
        else:
            out.append(
                Finding(
                    "import.convert.virt_v2v",
                    INFO,
                    "the guest is converted with virt-v2v (virtio drivers, no VMware "
                    "tools); vmferry keeps every MAC itself",
                    "Expect several minutes per guest.",
                )
            )
    elif not plan.virtio:
        out.append(
            Finding(
                "import.guest.no_virtio",
                W,
                f"the guest ({family}) may lack virtio drivers: disks on "
                f"{plan.disks[0].bus if plan.disks else 'sata'}, NICs "
                f"{plan.nics[0].model if plan.nics else 'e1000e'} for the first boot",
                "Install virtio drivers in the guest, then switch the buses; or "
                "pass --convert-guest always.",
            )
        )
    if not vm.disks:
        out.append(
            Finding(
                "import.disk.none",
                W,
                "the source VM has no disk",
                "Check that the right descriptor was given.",
            )
        )
    return out


def _devices(vm: SourceVm, plan: ImportPlan) -> list[Finding]:
    out: list[Finding] = []
    for dev in vm.passthrough:
        out.append(
            Finding(
                "import.device.passthrough",
                W,
                f"passthrough device {dev} is not imported",
                "Attach a host device on the destination by hand if needed.",
            )
        )
    for media in vm.media:
        if media.image:
            out.append(
                Finding(
                    "import.media.not_copied",
                    W,
                    f"{media.kind} image {media.image} does not follow the VM; the "
                    "drive is kept empty",
                    "Copy the image to the destination and insert it if needed.",
                )
            )
    if vm.media and any(m.kind == "floppy" for m in vm.media):
        out.append(
            Finding(
                "import.media.floppy",
                INFO,
                "the floppy drive is not imported",
                "Floppy drives are rarely needed on KVM.",
            )
        )
    if vm.serial_ports:
        out.append(
            Finding(
                "import.device.serial",
                INFO,
                f"{vm.serial_ports} serial port(s): the VM gets one serial console",
                "Reconnect anything that used the VMware serial port.",
            )
        )
    for disk in plan.disks:
        source_bus = next((d.bus for d in vm.disks if d.path == disk.source_path), "unknown")
        if source_bus != disk.bus:
            out.append(
                Finding(
                    "import.disk.bus",
                    INFO,
                    f"disk {disk.index} moves from {source_bus} to {disk.bus} ({disk.target_dev})",
                    "Guests that mount by device name may need /etc/fstab by UUID.",
                )
            )
    return out


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
