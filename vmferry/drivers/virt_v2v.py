"""Run virt-v2v to convert a VMware guest (a .vmx or a bare disk) into local KVM disks.

``convert_with_virt_v2v`` runs::

    virt-v2v -i vmx GUEST.vmx | -i disk DISK | -i libvirtxml GUEST.xml
             [--mac MAC:ip:...]  -o local -os TMP -of qcow2 -on NAME

with libguestfs forced onto the direct backend and TCG (``libguestfs_env``), where ``TMP`` is
a private directory inside ``out_dir``. Only when virt-v2v succeeds are its disks
(``NAME-sda``, ``NAME-sdb`` ...) and its libvirt XML (``NAME.xml``) moved into ``out_dir``
(the XML's disk paths are rewritten to match). On failure, timeout or Ctrl-C, the whole
process tree (virt-v2v, its qemu appliance, nbdkit, nbdcopy) is killed and the private
directory removed, so nothing partial is left behind.

virt-v2v's progress lines (``[  12.3] Converting ...``) are passed to ``on_progress``.
Known limitation: virt-v2v keeps only ``ethernetN.generatedAddress`` from a VMX; a static
MAC (``addressType = "static"``, ``address``) is lost, so the caller must set every MAC
itself.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as DET

from vmferry.errors import AlreadyExistsError, BadInputError, ToolError

InputMode = Literal["vmx", "disk", "libvirtxml"]

#: Packages virt-v2v needs at run time (it fails only at the very end without nbdkit).
REQUIRED_TOOLS = {"virt-v2v": "virt-v2v", "nbdkit": "nbdkit", "nbdcopy": "libnbd-bin"}
DEFAULT_TIMEOUT_S = 1800.0
TAIL_LINES = 20
_KILL_GRACE_S = 5.0

_PROGRESS_RE = re.compile(r"^\s*\[\s*(\d+(?:\.\d+)?)\]\s+(\S.*?)\s*$")
_CONVERTING_RE = re.compile(r"^Converting (.+?) to run on KVM$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"


@dataclass(frozen=True)
class V2vProgress:
    """One progress line: seconds since virt-v2v started, and what it is doing."""

    elapsed_s: float
    message: str


@dataclass(frozen=True)
class V2vNic:
    """A NIC as virt-v2v wrote it: ``mac`` is None when virt-v2v wrote none."""

    model: str | None
    mac: str | None
    source_type: str
    source: str | None


@dataclass(frozen=True)
class V2vDomainFacts:
    """What the libvirt XML written by virt-v2v says about the converted guest."""

    name: str
    osinfo_id: str | None
    firmware: str  # bios | uefi
    machine: str | None
    memory_kib: int | None
    vcpus: int | None
    disk_buses: tuple[str, ...]
    disk_files: tuple[str, ...]
    nics: tuple[V2vNic, ...]
    has_virtio_rng: bool
    memballoon_model: str | None


@dataclass(frozen=True)
class V2vOutputFacts:
    """What virt-v2v's own output says: the OS it converted, virtio drivers, warnings."""

    os_name: str | None = None
    virtio_drivers: bool | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class V2vResult:
    """A finished conversion: disks in guest order, virt-v2v's libvirt XML, the facts."""

    name: str
    disks: tuple[Path, ...]
    xml_path: Path
    domain: V2vDomainFacts
    os_name: str | None
    virtio_drivers: bool | None
    warnings: tuple[str, ...]
    elapsed_s: float
    argv: tuple[str, ...] = field(default=())


class V2vError(ToolError):
    """virt-v2v failed; ``summary`` is one line, ``tail`` the last lines of its output."""

    def __init__(self, summary: str, tail: Sequence[str] = ()) -> None:
        detail = "".join(f"\n  {line}" for line in tail)
        super().__init__(summary + detail)
        self.summary = summary
        self.tail = tuple(tail)


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class ApplianceKernel:
    """A kernel for libguestfs' appliance when the host has none in /boot (containers):
    passed to supermin as SUPERMIN_KERNEL, SUPERMIN_MODULES, SUPERMIN_KERNEL_VERSION."""

    kernel: Path
    modules: Path
    version: str


def host_has_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> bool:
    """True when supermin can find a host kernel (a /boot/vmlinuz-V with /lib/modules/V)."""
    return any((modules / k.name.removeprefix("vmlinuz-")).is_dir() for k in boot.glob("vmlinuz-*"))


def libguestfs_env(
    base: dict[str, str] | None = None, kernel: ApplianceKernel | None = None
) -> dict[str, str]:
    """The environment for libguestfs tools: direct backend, TCG forced, no debug output,
    and the appliance's kernel when one is given."""
    env = dict(os.environ if base is None else base)
    env["LIBGUESTFS_BACKEND"] = "direct"
    env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    for noisy in ("LIBGUESTFS_DEBUG", "LIBGUESTFS_TRACE"):
        env.pop(noisy, None)
    if kernel is not None:
        env["SUPERMIN_KERNEL"] = str(kernel.kernel)
        env["SUPERMIN_MODULES"] = str(kernel.modules)
        env["SUPERMIN_KERNEL_VERSION"] = kernel.version
    return env


def parse_progress_line(line: str) -> V2vProgress | None:
    """``[  12.3] Converting ...`` -> V2vProgress(12.3, "Converting ..."); others -> None."""
    match = _PROGRESS_RE.match(line)
    if match is None:
        return None
    return V2vProgress(float(match.group(1)), match.group(2))


def scan_output(lines: Iterable[str]) -> V2vOutputFacts:
    """Read the guest facts virt-v2v prints: converted OS, virtio drivers, warnings.

    Warnings are wrapped over several lines by virt-v2v; continuation lines are joined.
    """
    os_name: str | None = None
    virtio: bool | None = None
    warnings: list[str] = []
    in_warning = False
    for raw in lines:
        line = raw.strip()
        progress = parse_progress_line(line)
        if progress is not None:
            in_warning = False
            converting = _CONVERTING_RE.match(progress.message)
            if converting:
                os_name = converting.group(1)
            continue
        if not line:
            in_warning = False
            continue
        if "does not have virtio drivers installed" in line:
            virtio = False
        elif "has virtio drivers installed" in line:
            virtio = True
        if line.startswith("virt-v2v: warning:"):
            warnings.append(line.removeprefix("virt-v2v: warning:").strip())
            in_warning = True
        elif in_warning and not line.startswith("virt-v2v:"):
            warnings[-1] = f"{warnings[-1]} {line}"
        else:
            in_warning = False
    return V2vOutputFacts(os_name=os_name, virtio_drivers=virtio, warnings=tuple(warnings))


def error_summary(lines: Sequence[str], returncode: int) -> str:
    """One line saying why virt-v2v failed, from its ``virt-v2v: error:`` message if any."""
    for i, raw in enumerate(lines):
        line = raw.strip()
        if line.startswith("virt-v2v: error:"):
            parts = [line.removeprefix("virt-v2v: error:").strip()]
            for cont in lines[i + 1 :]:
                text = cont.strip()
                if not text or text.startswith(("virt-v2v:", "If reporting bugs")):
                    break
                parts.append(text)
            return "virt-v2v failed: " + " ".join(p for p in parts if p)
    useful = [ln.strip() for ln in lines if ln.strip()]
    last = useful[-1] if useful else "(no output)"
    return f"virt-v2v failed (exit status {returncode}): {last}"


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _memory_kib(elem: Element | None) -> int | None:
    if elem is None:
        return None
    value = _int_or_none((elem.text or "").strip())
    if value is None:
        return None
    scale = {"b": 1 / 1024, "bytes": 1 / 1024, "kib": 1, "k": 1, "mib": 1024, "m": 1024}
    scale |= {"gib": 1024 * 1024, "g": 1024 * 1024}
    return int(value * scale.get(elem.get("unit", "KiB").lower(), 1))


def parse_domain_xml(text: str) -> V2vDomainFacts:
    """Read the libvirt XML virt-v2v wrote (``-o local``) into V2vDomainFacts."""
    try:
        root = DET.fromstring(text)
    except DET.ParseError as exc:
        raise ToolError(f"virt-v2v wrote unreadable libvirt XML: {exc}") from exc
    if root.tag != "domain":
        raise ToolError(f"virt-v2v's XML has <{root.tag}>, not <domain>")
    osinfo = root.find(f"metadata/{{{_LIBOSINFO_NS}}}libosinfo/{{{_LIBOSINFO_NS}}}os")
    os_type = root.find("os/type")
    os_elem = root.find("os")
    uefi = os_elem is not None and (
        os_elem.get("firmware") == "efi" or os_elem.find("loader") is not None
    )
    disks = [d for d in root.findall("devices/disk") if d.get("device", "disk") == "disk"]
    nics = []
    for iface in root.findall("devices/interface"):
        source = iface.find("source")
        src = None
        if source is not None:
            src = source.get("network") or source.get("bridge") or source.get("dev")
        mac = iface.find("mac")
        model = iface.find("model")
        nics.append(
            V2vNic(
                model=model.get("type") if model is not None else None,
                mac=(mac.get("address") or "").lower() or None if mac is not None else None,
                source_type=iface.get("type", ""),
                source=src,
            )
        )
    balloon = root.find("devices/memballoon")
    return V2vDomainFacts(
        name=(root.findtext("name") or "").strip(),
        osinfo_id=osinfo.get("id") if osinfo is not None else None,
        firmware="uefi" if uefi else "bios",
        machine=os_type.get("machine") if os_type is not None else None,
        memory_kib=_memory_kib(root.find("memory")),
        vcpus=_int_or_none((root.findtext("vcpu") or "").strip() or None),
        disk_buses=tuple(
            (t.get("bus") or "") for d in disks if (t := d.find("target")) is not None
        ),
        disk_files=tuple(
            (s.get("file") or "") for d in disks if (s := d.find("source")) is not None
        ),
        nics=tuple(nics),
        has_virtio_rng=any(r.get("model") == "virtio" for r in root.findall("devices/rng")),
        memballoon_model=balloon.get("model") if balloon is not None else None,
    )


def build_argv(
    source: Path,
    *,
    input_mode: InputMode,
    out_dir: Path,
    name: str,
    out_format: str = "qcow2",
    extra: Sequence[str] = (),
) -> list[str]:
    """The virt-v2v command line (no -v/-x: its debug output is huge); ``extra`` goes
    before the output options (e.g. ``--mac MAC:ip:...``)."""
    return [
        "virt-v2v",
        "-i",
        input_mode,
        str(source),
        *extra,
        "-o",
        "local",
        "-os",
        str(out_dir),
        "-of",
        out_format,
        "-on",
        name,
    ]


def input_domain_xml(name: str, memory_mb: int, vcpus: int, disks: Sequence[Path],
                     firmware: str = "bios") -> str:  # fmt: skip
    """A minimal libvirt domain for ``-i libvirtxml``: the guest's local disks (qcow2, in
    order, on SATA as the guest saw them on its source's controllers) and its size."""
    devices = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file={quoteattr(str(disk))}/><target dev='sd{chr(ord('a') + i)}' bus='sata'/>"
        "</disk>"
        for i, disk in enumerate(disks)
    )
    loader = " firmware='efi'" if firmware == "efi" else ""
    return (f"<domain type='kvm'><name>{escape(name)}</name>"
            f"<memory unit='MiB'>{memory_mb}</memory><vcpu>{vcpus}</vcpu>"
            f"<os{loader}><type arch='x86_64'>hvm</type></os>"
            f"<devices>{devices}</devices></domain>\n")  # fmt: skip


def default_name(source: Path) -> str:
    """The output name for a source file: its stem, with unsafe characters replaced."""
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", source.stem).lstrip("._+-")
    return stem or "guest"


# --------------------------------------------------------------------------- running


def v2v_available(appliance_kernel: ApplianceKernel | None = None) -> str | None:
    """None when virt-v2v and what it needs are installed, else the reason it cannot run."""
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install {' '.join(missing)})"
    if appliance_kernel is None and "SUPERMIN_KERNEL" not in os.environ and not host_has_kernel():
        return (
            "libguestfs finds no kernel for its appliance (no /boot/vmlinuz-V with "
            "/lib/modules/V); install a linux-image package or set SUPERMIN_KERNEL and "
            "SUPERMIN_MODULES"
        )
    return None


def _children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), so children in other groups die too."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    """Kill virt-v2v's process group and every descendant; wait for virt-v2v itself."""
    descendants = _children_of(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        try:
            proc.wait(timeout=_KILL_GRACE_S)
            if sig == signal.SIGTERM:
                time.sleep(0.5)  # let the children exit on SIGTERM before the SIGKILL sweep
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_KILL_GRACE_S)


def _pump(stream: IO[str], sink: queue.Queue[str | None]) -> None:
    """Copy ``stream``'s lines into ``sink``; None marks the end."""
    try:
        for raw in stream:
            sink.put(raw.rstrip("\n"))
    finally:
        sink.put(None)


def _run_v2v(
    argv: Sequence[str],
    *,
    on_progress: Callable[[str], None] | None,
    timeout_s: float,
    appliance_kernel: ApplianceKernel | None = None,
) -> list[str]:
    """Run virt-v2v in its own session; return all output lines, raise V2vError on failure.

    The output is read by a thread, so the timeout holds while virt-v2v is silent, and
    Ctrl-C (KeyboardInterrupt) or any other exception kills the whole process tree.
    """
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            env=libguestfs_env(kernel=appliance_kernel),
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise ToolError("virt-v2v is not installed; apt-get install virt-v2v") from exc
    assert proc.stdout is not None
    sink: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, sink), daemon=True)
    reader.start()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill_tree(proc)
                raise V2vError(
                    f"virt-v2v did not finish within {timeout_s:g} s", lines[-TAIL_LINES:]
                )
            try:
                line = sink.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                break
            lines.append(line)
            progress = parse_progress_line(line)
            if progress is not None and on_progress is not None:
                on_progress(progress.message)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except V2vError:
        raise
    except BaseException:
        _kill_tree(proc)
        raise
    finally:
        reader.join(timeout=_KILL_GRACE_S)
        proc.stdout.close()
    if proc.returncode != 0:
        raise V2vError(error_summary(lines, proc.returncode), lines[-TAIL_LINES:])
    return lines


def convert_with_virt_v2v(
    vmx_or_disk: Path,
    *,
    input_mode: InputMode,
    out_dir: Path,
    out_format: str = "qcow2",
    on_progress: Callable[[str], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    name: str | None = None,
    appliance_kernel: ApplianceKernel | None = None,
    extra: Sequence[str] = (),
) -> V2vResult:
    """Convert ``vmx_or_disk`` with virt-v2v into ``out_dir`` (disks ``NAME-sdX``, ``NAME.xml``).

    ``name`` defaults to the source file's stem. ``appliance_kernel`` is needed only on a
    host without a kernel of its own (see ``v2v_available``). Raises BadInputError for a
    bad source or name, AlreadyExistsError if the outputs exist, V2vError (a ToolError) if
    virt-v2v fails or outlives ``timeout_s``; Ctrl-C kills virt-v2v's whole process tree.
    """
    if input_mode not in ("vmx", "disk", "libvirtxml"):
        raise BadInputError(f"input mode must be vmx, disk or libvirtxml, not {input_mode!r}")
    if not vmx_or_disk.is_file():
        raise BadInputError(f"{vmx_or_disk} does not exist or is not a file")
    reason = v2v_available(appliance_kernel)
    if reason is not None:
        raise ToolError(f"virt-v2v cannot run: {reason}")
    out_name = name or default_name(vmx_or_disk)
    if not _NAME_RE.match(out_name):
        raise BadInputError(f"{out_name!r} is not a usable guest name for virt-v2v")
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(p.name for p in out_dir.glob(f"{out_name}-sd*")) + [
        p.name for p in (out_dir / f"{out_name}.xml",) if p.exists()
    ]
    if existing:
        raise AlreadyExistsError(f"{out_dir} already holds {', '.join(existing)}")

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".v2v-{out_name}-", dir=out_dir))
    try:
        argv = build_argv(
            vmx_or_disk.resolve(),
            input_mode=input_mode,
            out_dir=work,
            name=out_name,
            out_format=out_format,
            extra=extra,
        )
        lines = _run_v2v(
            argv,
            on_progress=on_progress,
            timeout_s=timeout_s,
            appliance_kernel=appliance_kernel,
        )
        xml_tmp = work / f"{out_name}.xml"
        if not xml_tmp.is_file():
            raise V2vError(f"virt-v2v succeeded but wrote no {xml_tmp.name}", lines[-5:])
        xml_text = xml_tmp.read_text()
        domain = parse_domain_xml(xml_text)
        produced = [Path(f) for f in domain.disk_files]
        if not produced or any(p.parent != work or not p.is_file() for p in produced):
            raise V2vError(
                f"virt-v2v's XML names disks that are not in its output: {domain.disk_files}"
            )
        final_disks = tuple(out_dir / p.name for p in produced)
        xml_text = xml_text.replace(
            escape(str(work), {"'": "&apos;", '"': "&quot;"}),
            escape(str(out_dir), {"'": "&apos;", '"': "&quot;"}),
        )
        xml_tmp.write_text(xml_text)
        xml_path = out_dir / f"{out_name}.xml"
        moved: list[Path] = []
        try:
            for src, dst in zip(produced, final_disks, strict=True):
                os.replace(src, dst)
                moved.append(dst)
            os.replace(xml_tmp, xml_path)
        except BaseException:
            for dst in moved:
                dst.unlink(missing_ok=True)
            raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    facts = scan_output(lines)
    return V2vResult(
        name=out_name,
        disks=final_disks,
        xml_path=xml_path,
        domain=parse_domain_xml(xml_text),
        os_name=facts.os_name,
        virtio_drivers=facts.virtio_drivers,
        warnings=facts.warnings,
        elapsed_s=time.monotonic() - started,
        argv=tuple(argv),
    )
