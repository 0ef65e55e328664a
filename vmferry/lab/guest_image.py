"""Build the lab's guest: a Debian cloud kernel plus a tiny busybox initramfs running guestd
and the real QEMU guest agent (Debian's ``qemu-ga`` with the shared libraries ``ldd`` names).

The image is cached under ``cache_dir`` and rebuilt only when one of its inputs changes
(guestd.c, init, the busybox binary, qemu-ga and its libraries, this builder's version, the
kernel package). The kernel
package is resolved once (``apt-cache depends linux-image-cloud-amd64``) and then pinned in the
cache, so a warm build runs no apt command at all; ``force=True`` resolves and downloads it
again.

Layout of ``cache_dir``::

    vmlinuz, initrd.img          the outputs (GuestImage.kernel, GuestImage.initrd)
    guest.json                   stamp and metadata, written last
    kernel-<package>/            vmlinuz and the needed modules, unpacked once per package
    .lock                        serializes concurrent builders

Modules are loaded by the guest's /init with busybox insmod, in the order of /modules.order.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from vmferry.errors import LabError

BUILDER_VERSION = "1"
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
GUEST_SRC_DIR = Path(__file__).resolve().parent / "guest"
GUESTD_SRC = GUEST_SRC_DIR / "guestd.c"
INIT_SRC = GUEST_SRC_DIR / "init"
GCC_FLAGS = ("-static", "-O2", "-pthread", "-Wall", "-Wextra", "-s")
QEMU_GA = Path("/usr/sbin/qemu-ga")
#: Modules the guest needs (their dependencies are added): virtio PCI transport, network
#: (with net_failover/failover), block, balloon and console.
WANTED_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_balloon", "virtio_console")

_META_NAME = "guest.json"
_KERNEL_META_NAME = "kernel.json"
_MODULE_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


@dataclass(frozen=True)
class GuestImage:
    """A bootable lab guest: pass ``kernel`` and ``initrd`` to QEMU (-kernel, -initrd)."""

    kernel: Path
    initrd: Path
    kernel_version: str


def default_cache_dir() -> Path:
    """Where the guest image is cached: ``$VMFERRY_CACHE/guest`` (default /var/cache/vmferry)."""
    return Path(os.environ.get("VMFERRY_CACHE", "/var/cache/vmferry")) / "guest"


def guest_cmdline(
    *,
    ws_mb: int = 64,
    rate_mb_s: int = 0,
    verify_mb_s: int | None = None,
    ip: str | None = None,
    extra: Sequence[str] = (),
) -> str:
    """The kernel command line the guest's /init understands (serial console, quiet)."""
    parts = ["console=ttyS0", "quiet", f"vmferry.ws_mb={ws_mb}", f"vmferry.rate_mb_s={rate_mb_s}"]
    if verify_mb_s is not None:
        parts.append(f"vmferry.verify_mb_s={verify_mb_s}")
    if ip is not None:
        parts.append(f"vmferry.ip={ip}")
    parts.extend(extra)
    return " ".join(parts)


# --------------------------------------------------------------------------- modules


def module_name(path: str) -> str:
    """The kernel's name of a module file: ``.../virtio-rng.ko.xz`` -> ``virtio_rng``."""
    base = path.rsplit("/", 1)[-1]
    for suffix in _MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """Parse a ``modules.dep`` file: ``path: dep-path dep-path ...`` -> {path: [dep paths]}."""
    deps: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        path, sep, rest = line.partition(":")
        if not sep:
            continue
        deps[path.strip()] = rest.split()
    return deps


def resolve_modules(
    deps: Mapping[str, Sequence[str]],
    wanted: Iterable[str],
    builtin: Collection[str] = (),
) -> list[str]:
    """Module paths to load for ``wanted`` (module names), dependencies first, each once.

    ``deps`` maps a module path to the paths it depends on (as in ``modules.dep``); ``builtin``
    holds names of modules compiled into the kernel, which need no loading.
    """
    by_name = {module_name(p): p for p in deps}
    builtin_names = {module_name(b) for b in builtin}
    order: list[str] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(path: str) -> None:
        if path in done:
            return
        if path in visiting:
            cycle = " -> ".join(module_name(p) for p in [*visiting, path])
            raise LabError(f"kernel module dependency cycle: {cycle}")
        if path not in deps:
            if module_name(path) in builtin_names:
                return
            raise LabError(
                f"kernel module {module_name(path)} (needed by "
                f"{module_name(visiting[-1]) if visiting else 'the guest'}) is missing "
                "from the kernel package"
            )
        visiting.append(path)
        for dep in deps[path]:
            visit(dep)
        visiting.pop()
        done.add(path)
        order.append(path)

    for name in wanted:
        key = module_name(name)
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin_names:
            raise LabError(f"kernel module {key} is neither a module nor built into the kernel")
    return order


def read_module_bytes(path: Path) -> bytes:
    """A module's ELF bytes, decompressed if it is .ko.xz/.ko.gz/.ko.zst (busybox insmod
    may not decompress)."""
    name = path.name
    try:
        if name.endswith(".ko.xz"):
            return lzma.decompress(path.read_bytes())
        if name.endswith(".ko.gz"):
            return gzip.decompress(path.read_bytes())
        if name.endswith(".ko.zst"):
            return _run(
                ["zstd", "-dc", "--", str(path)],
                what=f"zstd -d {name}",
                hint="apt-get install zstd",
            ).stdout
        return path.read_bytes()
    except (OSError, lzma.LZMAError, gzip.BadGzipFile) as exc:
        raise LabError(f"cannot read kernel module {path}: {exc}", cause=exc) from exc


def modinfo_from_elf(data: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` section of a module's ELF image: {key: [values]}."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise LabError("kernel module is not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = sections[shstrndx][4]
    info: dict[str, list[str]] = {}
    for name_off, _type, _flags, _addr, offset, size in sections:
        start = strtab_off + name_off
        if data[start : data.index(b"\0", start)] != b".modinfo":
            continue
        for item in data[offset : offset + size].split(b"\0"):
            key, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep:
                info.setdefault(key, []).append(value)
    return info


def modules_dep_from_modinfo(moddir: Path, wanted: Iterable[str]) -> dict[str, list[str]]:
    """A ``modules.dep``-like map built from the modules' own ``depends=`` fields.

    Debian's kernel packages ship no modules.dep (depmod runs at install time), so the builder
    reads the dependencies from the modules it needs, following them transitively.
    """
    index: dict[str, str] = {}
    for path in sorted(moddir.rglob("*.ko*")):
        rel = path.relative_to(moddir).as_posix()
        if rel.endswith(_MODULE_SUFFIXES):
            index.setdefault(module_name(rel), rel)
    deps: dict[str, list[str]] = {}
    todo = [module_name(w) for w in wanted]
    while todo:
        name = todo.pop()
        found = index.get(name)
        if found is None or found in deps:
            continue
        info = modinfo_from_elf(read_module_bytes(moddir / found))
        names = [d for v in info.get("depends", []) for d in v.split(",") if d]
        deps[found] = [index.get(module_name(d), f"{module_name(d)}.ko") for d in names]
        todo.extend(module_name(d) for d in names)
    return deps


# --------------------------------------------------------------------------- stamp


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compute_stamp(
    *,
    guestd_sha: str,
    init_sha: str,
    busybox_sha: str,
    kernel_package: str,
    agent_sha: str = "",
    builder_version: str = BUILDER_VERSION,
    modules: Sequence[str] = WANTED_MODULES,
) -> str:
    """A digest of every input of the image: equal stamps mean an identical image."""
    inputs = {
        "builder": builder_version,
        "guestd": guestd_sha,
        "init": init_sha,
        "busybox": busybox_sha,
        "agent": agent_sha,
        "kernel_package": kernel_package,
        "modules": list(modules),
        "gcc_flags": list(GCC_FLAGS),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def read_meta(path: Path) -> dict[str, str] | None:
    """The cache's metadata (guest.json), or None if it is missing or unreadable."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        return None
    return {str(k): v for k, v in raw.items()}


def is_current(meta: Mapping[str, str] | None, stamp: str, outputs: Iterable[Path]) -> bool:
    """True when the cached image was built from exactly these inputs and is still there."""
    if meta is None or meta.get("stamp") != stamp or not meta.get("kernel_version"):
        return False
    return all(p.is_file() and p.stat().st_size > 0 for p in outputs)


# --------------------------------------------------------------------------- cpio


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc archive (regular file, directory, symlink or device node)."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def write_newc(out: _Sink, entries: Iterable[CpioEntry]) -> None:
    """Write a ``cpio -H newc`` archive (owner root, mtime 0: the bytes are reproducible)."""

    def member(ino: int, entry: CpioEntry) -> None:
        name = entry.name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, *entry.rdev)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        header += b"%08X%08X" % (len(name), 0)
        out.write(header + name + b"\0" * (-(len(header) + len(name)) % 4))
        out.write(entry.data + b"\0" * (-len(entry.data) % 4))

    count = 0
    for entry in entries:
        count += 1
        member(count, entry)
    member(count + 1, CpioEntry("TRAILER!!!", 0))


def read_newc(data: bytes) -> list[CpioEntry]:
    """Parse a newc archive (uncompressed); used by the tests and for inspection."""
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if data[pos : pos + 6] != b"070701":
            raise LabError(f"bad cpio header at offset {pos}")
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return entries
        entries.append(CpioEntry(name, mode, data[pos : pos + size], (f[9], f[10])))
        pos += size
        pos += -pos % 4


# --------------------------------------------------------------------------- helpers


def _last_line(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # apt's "unsandboxed as root" notice is noise, not the cause of a failure.
    useful = [ln for ln in lines if "unsandboxed" not in ln]
    return (useful or lines or ["(no output)"])[-1]


def _run(
    cmd: Sequence[str],
    *,
    what: str,
    hint: str,
    cwd: Path | None = None,
    stdin: BinaryIO | None = None,
) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, stdin=stdin, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]} not found; {hint}", cause=exc) from exc
    if proc.returncode != 0:
        raise LabError(f"{what} failed: {_last_line(proc.stderr or proc.stdout)}; {hint}")
    return proc


@contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Hold ``cache_dir/.lock`` exclusively: one builder at a time per cache directory."""
    with open(cache_dir / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def resolve_kernel_package(meta_package: str = KERNEL_META_PACKAGE) -> str:
    """The versioned kernel package behind the meta package (linux-image-6.1.0-NN-cloud-amd64)."""
    proc = _run(
        ["apt-cache", "depends", meta_package],
        what=f"apt-cache depends {meta_package}",
        hint="run apt-get update",
    )
    text = proc.stdout.decode("utf-8", "replace")
    found = re.findall(r"^\s*Depends:\s*(linux-image-\d\S*)\s*$", text, re.MULTILINE)
    if not found:
        raise LabError(
            f"apt-cache depends {meta_package} names no linux-image-<version> package; "
            "run apt-get update"
        )
    return str(found[0])


def _static_elf(data: bytes) -> bool:
    """True if an ELF64 executable has no program interpreter (is statically linked)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(
        struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3  # PT_INTERP
        for i in range(phnum)
    )


def _fetch_kernel(
    cache_dir: Path, package: str, say: Callable[[str], None]
) -> tuple[Path, list[str]]:
    """Download and unpack ``package`` once; returns (kernel dir, module files in load order)."""
    kdir = cache_dir / f"kernel-{package}"
    meta = read_meta(kdir / _KERNEL_META_NAME)
    if meta is not None and meta.get("modules_wanted") == ",".join(WANTED_MODULES):
        order = [m for m in meta.get("modules_order", "").split(",") if m]
        if (kdir / "vmlinuz").is_file() and all((kdir / "modules" / m).is_file() for m in order):
            return kdir, order

    with tempfile.TemporaryDirectory(prefix=".kernel-", dir=cache_dir) as tmp_s:
        tmp = Path(tmp_s)
        say(f"downloading {package}")
        _run(
            ["apt-get", "download", package],
            what=f"apt-get download {package}",
            hint="run apt-get update",
            cwd=tmp,
        )
        debs = sorted(tmp.glob(f"{package}_*.deb"))
        if not debs:
            raise LabError(f"apt-get download {package} produced no .deb; run apt-get update")
        say(f"unpacking {debs[0].name}")
        root = tmp / "root"
        _run(
            ["dpkg-deb", "-x", str(debs[0]), str(root)],
            what=f"dpkg-deb -x {debs[0].name}",
            hint="check free space in " + str(cache_dir),
        )
        vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise LabError(f"{debs[0].name} holds no boot/vmlinuz-*; is it a kernel image?")
        version = vmlinuz[0].name.removeprefix("vmlinuz-")
        moddir = next(
            (
                d
                for d in (root / "lib/modules" / version, root / "usr/lib/modules" / version)
                if d.is_dir()
            ),
            None,
        )
        if moddir is None:
            raise LabError(f"{debs[0].name} holds no lib/modules/{version}")
        builtin: list[str] = []
        if (moddir / "modules.builtin").is_file():
            builtin = (moddir / "modules.builtin").read_text().split()
        if (moddir / "modules.dep").is_file():
            deps = parse_modules_dep((moddir / "modules.dep").read_text())
        else:
            deps = modules_dep_from_modinfo(moddir, WANTED_MODULES)
        paths = resolve_modules(deps, WANTED_MODULES, builtin)
        compressed = [p for p in paths if not p.endswith(".ko")]

        new = tmp / "kernel"
        (new / "modules").mkdir(parents=True)
        shutil.copyfile(vmlinuz[0], new / "vmlinuz")
        order = []
        for rel in paths:
            name = module_name(rel) + ".ko"
            (new / "modules" / name).write_bytes(read_module_bytes(moddir / rel))
            order.append(name)
        kmeta = {
            "package": package,
            "deb": debs[0].name,
            "kernel_version": version,
            "modules_wanted": ",".join(WANTED_MODULES),
            "modules_order": ",".join(order),
            "modules_compressed": "yes" if compressed else "no",
        }
        (new / _KERNEL_META_NAME).write_text(json.dumps(kmeta, indent=1) + "\n")
        if kdir.exists():
            shutil.rmtree(kdir)
        new.rename(kdir)
        say(
            f"kernel {version}: {len(order)} modules "
            f"({'decompressed' if compressed else 'not compressed'}): {' '.join(order)}"
        )
    return kdir, order


def parse_ldd(text: str) -> list[str]:
    """Pure: the absolute paths of the shared objects in ``ldd``'s output (the vDSO has none)."""
    found: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        path = line.split("=>", 1)[1].strip() if "=>" in line else line
        path = path.split(" (", 1)[0].strip()
        if path.startswith("/"):
            found.append(path)
    return found


def agent_files(
    binary: Path = QEMU_GA, known: Mapping[str, str] | None = None
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """qemu-ga and every shared library it loads, as (path in the initramfs, bytes), and the
    libraries' paths; they keep their absolute paths, where the dynamic loader looks. The
    list ``ldd`` gave is kept in the cache's metadata (``known``: ``agent_sha`` of the binary
    and ``agent_libs``), so a warm build runs no command."""
    if not binary.is_file():
        raise LabError(f"{binary} not found; apt-get install qemu-guest-agent (make install does)")
    data = binary.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    libs = [p for p in (known or {}).get("agent_libs", "").split(",") if p]
    if (known or {}).get("agent_binary_sha") != sha or not libs:
        ldd = _run(["ldd", str(binary)], what=f"ldd {binary}", hint="reinstall qemu-guest-agent")
        libs = parse_ldd(ldd.stdout.decode())
    files = [("bin/qemu-ga", data)]
    for path in libs:
        files.append((path.lstrip("/"), Path(path).resolve().read_bytes()))
    return files, libs


def _files_digest(files: Sequence[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _compile_guestd(workdir: Path) -> bytes:
    out = workdir / "guestd"
    _run(
        ["gcc", *GCC_FLAGS, "-o", str(out), str(GUESTD_SRC)],
        what="gcc -static guestd.c",
        hint="apt-get install gcc libc6-dev",
    )
    return out.read_bytes()


def _initramfs_entries(
    *,
    init: bytes,
    guestd: bytes,
    busybox: bytes,
    applets: Sequence[str],
    modules: Sequence[tuple[str, bytes]],
    agent: Sequence[tuple[str, bytes]] = (),
) -> list[CpioEntry]:
    dirs = ["bin", "dev", "proc", "sys", "tmp", "root", "lib", "lib/modules"]
    for name, _ in agent:  # the libraries' directories (lib/x86_64-linux-gnu, lib64)
        parent = str(Path(name).parent)
        if parent not in dirs:
            dirs.append(parent)
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755) for d in dirs]
    entries.append(CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(CpioEntry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)))
    entries.append(CpioEntry("init", stat.S_IFREG | 0o755, init))
    entries.append(CpioEntry("bin/busybox", stat.S_IFREG | 0o755, busybox))
    entries.append(CpioEntry("bin/guestd", stat.S_IFREG | 0o755, guestd))
    for applet in applets:
        if applet and "/" not in applet and applet not in ("busybox", "guestd", "init"):
            entries.append(CpioEntry(f"bin/{applet}", stat.S_IFLNK | 0o777, b"busybox"))
    for name, data in modules:
        entries.append(CpioEntry(f"lib/modules/{name}", stat.S_IFREG | 0o644, data))
    for name, data in agent:
        entries.append(CpioEntry(name, stat.S_IFREG | 0o755, data))
    order = "".join(f"{name}\n" for name, _ in modules).encode()
    entries.append(CpioEntry("modules.order", stat.S_IFREG | 0o644, order))
    return entries


# --------------------------------------------------------------------------- build


def build_guest_image(
    cache_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> GuestImage:
    """Build (or reuse) the lab guest's kernel and initramfs under ``cache_dir``."""
    say = progress or (lambda _msg: None)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(
            f"cannot create {cache_dir}: {exc.strerror}; run as root or set VMFERRY_CACHE",
            cause=exc,
        ) from exc
    for src in (GUESTD_SRC, INIT_SRC):
        if not src.is_file():
            raise LabError(f"{src} is missing; reinstall vmferry")
    if not BUSYBOX.is_file():
        raise LabError(f"{BUSYBOX} not found; apt-get install busybox-static")

    kernel_out = cache_dir / "vmlinuz"
    initrd_out = cache_dir / "initrd.img"
    meta_path = cache_dir / _META_NAME
    with cache_lock(cache_dir):
        busybox = BUSYBOX.read_bytes()
        meta = read_meta(meta_path)
        agent, agent_libs = agent_files(known=meta)
        digests = {
            "guestd_sha": file_digest(GUESTD_SRC),
            "init_sha": file_digest(INIT_SRC),
            "busybox_sha": hashlib.sha256(busybox).hexdigest(),
            "agent_sha": _files_digest(agent),
        }
        if not force and meta is not None and meta.get("kernel_package"):
            stamp = compute_stamp(kernel_package=meta["kernel_package"], **digests)
            if is_current(meta, stamp, (kernel_out, initrd_out)):
                say(f"guest image is current ({meta['kernel_version']})")
                return GuestImage(kernel_out, initrd_out, meta["kernel_version"])

        t0 = time.monotonic()
        if not _static_elf(busybox):
            raise LabError(f"{BUSYBOX} is not statically linked; apt-get install busybox-static")
        package = meta.get("kernel_package", "") if meta is not None and not force else ""
        if not package:
            say(f"resolving {KERNEL_META_PACKAGE}")
            package = resolve_kernel_package()
        if force:
            shutil.rmtree(cache_dir / f"kernel-{package}", ignore_errors=True)
        kdir, order = _fetch_kernel(cache_dir, package, say)
        kmeta = read_meta(kdir / _KERNEL_META_NAME) or {}
        version = kmeta.get("kernel_version", "")
        if not version:
            raise LabError(f"{kdir / _KERNEL_META_NAME} is unreadable; rerun with force")

        with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as tmp_s:
            tmp = Path(tmp_s)
            say("compiling guestd")
            guestd = _compile_guestd(tmp)
            applets = (
                _run(
                    [str(BUSYBOX), "--list"], what="busybox --list", hint="reinstall busybox-static"
                )
                .stdout.decode()
                .split()
            )
            entries = _initramfs_entries(
                init=INIT_SRC.read_bytes(),
                guestd=guestd,
                busybox=busybox,
                applets=applets,
                modules=[(m, (kdir / "modules" / m).read_bytes()) for m in order],
                agent=agent,
            )
            say("writing initramfs")
            initrd_tmp = tmp / "initrd.img"
            with (
                open(initrd_tmp, "wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
            ):
                write_newc(gz, entries)
            kernel_tmp = tmp / "vmlinuz"
            shutil.copyfile(kdir / "vmlinuz", kernel_tmp)
            for p in (initrd_tmp, kernel_tmp):
                os.chmod(p, 0o644)
            # The stamp goes last: an interrupted build leaves a stale stamp, so it reruns.
            meta_path.unlink(missing_ok=True)
            os.replace(kernel_tmp, kernel_out)
            os.replace(initrd_tmp, initrd_out)
            stamp = compute_stamp(kernel_package=package, **digests)
            new_meta = {
                "stamp": stamp,
                "kernel_package": package,
                "kernel_version": version,
                "modules": ",".join(order),
                "modules_compressed": kmeta.get("modules_compressed", ""),
                "agent_binary_sha": hashlib.sha256(agent[0][1]).hexdigest(),
                "agent_libs": ",".join(agent_libs),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            meta_tmp = tmp / _META_NAME
            meta_tmp.write_text(json.dumps(new_meta, indent=1) + "\n")
            os.replace(meta_tmp, meta_path)
        say(
            f"guest image built in {time.monotonic() - t0:.1f} s: "
            f"initrd {initrd_out.stat().st_size // 1024} KiB, kernel {version}"
        )
        return GuestImage(kernel_out, initrd_out, version)


# --------------------------------------------------------------------------- data disk


def data_disk_content(size_mb: int) -> Iterator[bytes]:
    """The deterministic guest-visible bytes of a data disk, one MiB at a time."""
    for i in range(size_mb):
        yield hashlib.shake_256(f"vmferry data disk v1 block {i}".encode()).digest(1 << 20)


def make_data_disk(path: Path, size_mb: int = 16) -> str:
    """Write a qcow2 disk of known content to ``path``; returns the sha256 of its raw bytes
    (compare with the guest's ``DISK sha256=`` line)."""
    if size_mb <= 0:
        raise LabError(f"data disk size must be positive, not {size_mb} MiB")
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix=".disk-", dir=path.parent) as tmp_s:
        raw = Path(tmp_s) / "disk.raw"
        with open(raw, "wb") as f:
            for block in data_disk_content(size_mb):
                digest.update(block)
                f.write(block)
        out = Path(tmp_s) / "disk.qcow2"
        _run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)],
            what=f"qemu-img convert to {path.name}",
            hint="apt-get install qemu-utils",
        )
        os.chmod(out, 0o644)
        os.replace(out, path)
    return digest.hexdigest()
