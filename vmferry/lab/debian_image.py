"""Build a real, bootable Debian 12 guest disk (raw, 3 GiB sparse) for the virt-v2v tests.

The recipe (verified in the lab notes) needs no loop partitions:

1. ``debootstrap --variant=minbase`` with a kernel, GRUB, initramfs-tools, systemd and
   ifupdown into a directory (about 70 s);
2. configure the tree: fstab with the root by UUID, ``console=ttyS0`` on the kernel command
   line, a hostname, eth0 by DHCP through ifupdown (``net.ifnames=0`` keeps the name eth0),
   and initramfs-tools told to put only the disk drivers a VM boots from in an initramfs
   (``MODULES=list``; Debian's default ``most`` takes every storage driver): the initramfs
   virt-v2v rebuilds in its emulated appliance then takes about 20 s instead of 60;
3. ``tar --numeric-owner`` the tree;
4. guestfish on a sparse raw file: MBR partition, ext4 with the chosen UUID, ``tar-in``,
   then ``grub-install --target=i386-pc /dev/sda`` and ``update-grub`` inside the guest
   (about 75 s).

The disk is cached under ``cache_dir`` by a key made of the recipe (``RECIPE_VERSION``, suite,
packages, size): ``debian-<suite>-<key>.raw`` plus ``<same>.json`` (metadata, written last).
It is built under a temporary name and renamed, so an interrupted build leaves no disk.
The guest prints its boot and a ``login:`` prompt on the serial console (ttyS0).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from vmferry.drivers.virt_v2v import ApplianceKernel, host_has_kernel, libguestfs_env
from vmferry.errors import LabError
from vmferry.lab.guest_image import cache_lock, resolve_kernel_package

RECIPE_VERSION = "2"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "linux-image-cloud-amd64",
    "grub-pc",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "ifupdown",
    "isc-dhcp-client",
)
DISK_SIZE = "3G"
HOSTNAME = "vmferry-debian"
KERNEL_CMDLINE = "console=ttyS0,115200n8 net.ifnames=0"
# The drivers of the disks the guest boots from, on VMware (pvscsi, IDE) and, once converted,
# on KVM (virtio); ext4 is built into Debian's cloud kernel.
INITRAMFS_MODULES = ("vmw_pvscsi", "ata_piix", "sd_mod", "virtio_pci", "virtio_blk",
                     "virtio_scsi")  # fmt: skip
DEBOOTSTRAP_TIMEOUT_S = 1200
GUESTFISH_TIMEOUT_S = 1200

Say = Callable[[str], None]


def default_cache_dir() -> Path:
    """``$VMFERRY_CACHE/debian-v2v`` (default /var/cache/vmferry/debian-v2v)."""
    return Path(os.environ.get("VMFERRY_CACHE", "/var/cache/vmferry")) / "debian-v2v"


def recipe_key(
    *,
    suite: str = SUITE,
    packages: Sequence[str] = PACKAGES,
    size: str = DISK_SIZE,
    cmdline: str = KERNEL_CMDLINE,
    version: str = RECIPE_VERSION,
) -> str:
    """A short digest of everything that shapes the disk (not the mirror: same content)."""
    inputs = {
        "version": version,
        "suite": suite,
        "packages": list(packages),
        "size": size,
        "cmdline": cmdline,
        "hostname": HOSTNAME,
        "initramfs_modules": list(INITRAMFS_MODULES),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def disk_path(cache_dir: Path) -> Path:
    """Where the disk of the current recipe lives in ``cache_dir``."""
    return cache_dir / f"debian-{SUITE}-{recipe_key()}.raw"


def read_disk_meta(disk: Path) -> dict[str, str]:
    """The metadata written next to a built disk (uuid, timings ...); {} if there is none."""
    try:
        raw = json.loads(disk.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


# --------------------------------------------------------------------------- guest files


def fstab(root_uuid: str) -> str:
    """The guest's /etc/fstab: only the root file system, by UUID."""
    return f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"


def grub_defaults(cmdline: str = KERNEL_CMDLINE) -> str:
    """/etc/default/grub: short timeout, GRUB and the kernel on the serial console."""
    return (
        "GRUB_DEFAULT=0\n"
        "GRUB_TIMEOUT=1\n"
        "GRUB_DISTRIBUTOR=Debian\n"
        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
        f'GRUB_CMDLINE_LINUX="{cmdline}"\n'
        'GRUB_TERMINAL="console serial"\n'
        'GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"\n'
        "GRUB_DISABLE_OS_PROBER=true\n"
    )


def network_interfaces() -> str:
    """/etc/network/interfaces: eth0 by DHCP when it appears (never blocks the boot)."""
    return (
        "source /etc/network/interfaces.d/*\n\n"
        "auto lo\niface lo inet loopback\n\n"
        "allow-hotplug eth0\niface eth0 inet dhcp\n"
    )


def configure_tree(root: Path, root_uuid: str) -> None:
    """Write the guest's configuration into the debootstrapped tree ``root``."""
    etc = root / "etc"
    (etc / "fstab").write_text(fstab(root_uuid))
    (etc / "hostname").write_text(HOSTNAME + "\n")
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
    (etc / "default").mkdir(exist_ok=True)
    (etc / "default" / "grub").write_text(grub_defaults())
    (etc / "network").mkdir(exist_ok=True)
    (etc / "network" / "interfaces.d").mkdir(exist_ok=True)
    (etc / "network" / "interfaces").write_text(network_interfaces())
    initramfs = etc / "initramfs-tools"
    (initramfs / "conf.d").mkdir(parents=True, exist_ok=True)
    (initramfs / "conf.d" / "vmferry-modules").write_text("MODULES=list\n")
    (initramfs / "modules").write_text("".join(f"{m}\n" for m in INITRAMFS_MODULES))
    # The package cache is not needed in the guest; it only makes every copy slower.
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def guestfish_script(tarball: Path, disk: Path, root_uuid: str, size: str = DISK_SIZE) -> str:
    """The guestfish commands that make the bootable disk from the tree's tarball."""
    return "\n".join(
        [
            f'sparse "{disk}" {size}',
            "run",
            "part-disk /dev/sda mbr",
            "part-set-bootable /dev/sda 1 true",
            "mkfs ext4 /dev/sda1",
            f"set-e2uuid /dev/sda1 {root_uuid}",
            "mount /dev/sda1 /",
            f'tar-in "{tarball}" /',
            'command "grub-install --target=i386-pc /dev/sda"',
            'command "update-grub"',
            "umount-all",
            "shutdown",
            "",
        ]
    )


# --------------------------------------------------------------------------- helpers


def check_mirror(mirror: str, suite: str = SUITE, timeout_s: float = 15) -> None:
    """Raise LabError unless ``mirror`` serves ``dists/<suite>/Release``."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            resp.read(64)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LabError(
            f"cannot reach the Debian mirror {mirror} ({url}: {reason}); debootstrap needs it "
            "to build the Debian test disk (set http_proxy, or pass another mirror)",
            cause=exc,
        ) from exc


def _tail(text: str, lines: int = 1) -> str:
    useful = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(useful[-lines:]) if useful else "(no output)"


def _run(
    cmd: Sequence[str],
    *,
    what: str,
    timeout_s: float,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
) -> str:
    try:
        proc = subprocess.run(
            list(cmd),
            input=input_text,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]} not found; apt-get install {cmd[0]}", cause=exc) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what} did not finish within {timeout_s:g} s", cause=exc) from exc
    if proc.returncode != 0:
        out = proc.stderr or proc.stdout
        # libguestfs puts a failed command's whole output after its own "error:"; the tool's
        # own error lines (grub-install's) come later: all of them, so the cause is named
        errors = list(dict.fromkeys(ln.strip() for ln in out.splitlines() if "error:" in ln))
        raise LabError(f"{what} failed: {' | '.join(errors) if errors else _tail(out, 3)}"
                       f" (last lines: {_tail(out, 3)})")  # fmt: skip
    return proc.stdout


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(path.resolve())
    found: list[str] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            mnt = fields[4].encode().decode("unicode_escape")
            if mnt == prefix or mnt.startswith(prefix + "/"):
                found.append(mnt)
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Remove a build tree, first unmounting what an interrupted debootstrap left mounted."""
    for mnt in _mounts_under(path):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
    if _mounts_under(path):
        raise LabError(f"{path} still has mounts below it; unmount them and remove it by hand")
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- appliance kernel


def appliance_kernel(
    cache_root: Path | None = None, say: Say | None = None
) -> ApplianceKernel | None:
    """A kernel for libguestfs' appliance, or None when the host has its own.

    Containers (like this lab's machine) have no /boot kernel, and supermin then fails with
    "failed to find a suitable kernel". The Debian cloud kernel package is downloaded once,
    unpacked (``dpkg-deb -x``) and given a modules.dep (``depmod -b``) under
    ``<cache_root>/appliance-kernel/<package>/`` (cache_root: VMFERRY_CACHE or
    /var/cache/vmferry).
    """
    if host_has_kernel():
        return None
    # supermin copies the modules' parent directories' modes from the host's /lib/modules
    # and fails ("lstat: /lib/modules") when it does not exist; an empty one is enough.
    Path("/lib/modules").mkdir(exist_ok=True)
    note = say or (lambda _msg: None)
    root = cache_root or Path(os.environ.get("VMFERRY_CACHE", "/var/cache/vmferry"))
    base = root / "appliance-kernel"
    base.mkdir(parents=True, exist_ok=True)
    with cache_lock(base):
        for done in sorted(base.glob("linux-image-*/boot/vmlinuz-*")):
            version = done.name.removeprefix("vmlinuz-")
            pkg_root = done.parent.parent
            modules = pkg_root / "lib/modules" / version
            if (modules / "modules.dep").is_file():
                return ApplianceKernel(done, modules, version)
        package = resolve_kernel_package()
        note(f"fetching {package} for the libguestfs appliance (the host has no kernel)")
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=base))
        try:
            subprocess.run(
                ["apt-get", "download", package], cwd=work, capture_output=True, check=False
            )
            debs = sorted(work.glob(f"{package}_*.deb"))
            if not debs:
                raise LabError(f"apt-get download {package} failed; run apt-get update")
            tree = work / "tree"
            _run(["dpkg-deb", "-x", str(debs[0]), str(tree)], what="dpkg-deb -x", timeout_s=600)
            kernels = sorted((tree / "boot").glob("vmlinuz-*"))
            if not kernels:
                raise LabError(f"{debs[0].name} holds no boot/vmlinuz-*")
            version = kernels[0].name.removeprefix("vmlinuz-")
            if not (tree / "lib/modules" / version).is_dir():
                raise LabError(f"{debs[0].name} holds no lib/modules/{version}")
            _run(["depmod", "-b", str(tree), version], what="depmod", timeout_s=600)
            final = base / package
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tree, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return ApplianceKernel(
            final / "boot" / f"vmlinuz-{version}", final / "lib/modules" / version, version
        )


# --------------------------------------------------------------------------- build


def build_debian_disk(
    cache_dir: Path | None = None,
    *,
    mirror: str = DEFAULT_MIRROR,
    progress: Say | None = None,
    force: bool = False,
) -> Path:
    """Build (or reuse) the Debian guest disk in ``cache_dir``; returns the raw disk's path.

    Needs root, debootstrap, libguestfs (guestfish) and the Debian mirror. The metadata next
    to the disk (``read_disk_meta``) holds the root UUID and the time each step took.
    """
    say = progress or (lambda _msg: None)
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(
            f"cannot create {cache}: {exc.strerror}; run as root or set VMFERRY_CACHE", cause=exc
        ) from exc
    disk = disk_path(cache)
    meta_path = disk.with_suffix(".json")
    with cache_lock(cache):
        if not force and disk.is_file() and read_disk_meta(disk).get("key") == recipe_key():
            say(f"Debian disk is current: {disk}")
            return disk
        for tool in ("debootstrap", "guestfish"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} not found; apt-get install debootstrap libguestfs-tools")
        check_mirror(mirror)
        meta_path.unlink(missing_ok=True)
        disk.unlink(missing_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            meta = _build(work, disk, mirror, say)
            tmp_meta = work / "meta.json"
            tmp_meta.write_text(json.dumps(meta, indent=1) + "\n")
            os.replace(tmp_meta, meta_path)
        finally:
            _remove_tree(work)
    return disk


def _build(work: Path, disk: Path, mirror: str, say: Say) -> dict[str, str]:
    root = work / "root"
    root_uuid = str(uuid.uuid4())
    say(f"debootstrap {SUITE} from {mirror}")
    t0 = time.monotonic()
    try:
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                mirror,
            ],
            what="debootstrap",
            timeout_s=DEBOOTSTRAP_TIMEOUT_S,
        )
    except LabError as exc:
        log = root / "debootstrap" / "debootstrap.log"
        detail = _tail(log.read_text(errors="replace"), 3) if log.is_file() else ""
        hint = " (is the Debian mirror reachable?)" if "Failed getting" in exc.message else ""
        raise LabError(f"{exc.message}{hint}{'; log: ' + detail if detail else ''}") from exc
    t_debootstrap = time.monotonic() - t0
    for mnt in _mounts_under(root):  # debootstrap unmounts on success; be sure
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
    configure_tree(root, root_uuid)
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise LabError("debootstrap installed no kernel (no /boot/vmlinuz-*)")

    say("packing the tree")
    t1 = time.monotonic()
    tarball = work / "root.tar"
    _run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."],
        what="tar of the Debian tree",
        timeout_s=600,
    )
    shutil.rmtree(root)
    t_tar = time.monotonic() - t1

    say("guestfish: partition, ext4, tar-in, grub-install, update-grub")
    t2 = time.monotonic()
    tmp_disk = work / "disk.raw"
    _run(
        ["guestfish"],
        what="guestfish (disk, grub-install)",
        timeout_s=GUESTFISH_TIMEOUT_S,
        env=libguestfs_env(kernel=appliance_kernel(disk.parent.parent, say)),
        input_text=guestfish_script(tarball, tmp_disk, root_uuid),
    )
    t_guestfish = time.monotonic() - t2
    os.chmod(tmp_disk, 0o644)
    os.replace(tmp_disk, disk)
    say(
        f"Debian disk built: debootstrap {t_debootstrap:.0f} s, tar {t_tar:.0f} s, "
        f"guestfish {t_guestfish:.0f} s"
    )
    return {
        "key": recipe_key(),
        "recipe_version": RECIPE_VERSION,
        "suite": SUITE,
        "mirror": mirror,
        "root_uuid": root_uuid,
        "kernel_version": kernels[-1],
        "debootstrap_s": f"{t_debootstrap:.1f}",
        "tar_s": f"{t_tar:.1f}",
        "guestfish_s": f"{t_guestfish:.1f}",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
