"""`vmferry lab guest create`: a tiny TCG guest with heartbeat, memory workload and echo."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import AlreadyExistsError, BadInputError, NotFoundError
from vmferry.lab import daemons
from vmferry.lab import topology as topo
from vmferry.lab.console import ConsoleTail, Heartbeat
from vmferry.lab.guest_image import build_guest_image, default_cache_dir, make_data_disk
from vmferry.lab.guest_xml import LabGuestSpec, lab_guest_xml
from vmferry.lab.lifecycle import is_running, topology_of
from vmferry.lab.state import GuestRecord, lab_dir, load_state, save_state

Progress = Callable[[str], None]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
DATA_DISK_MB = 16
DISK_POOLS = {"shared": topo.SHARED_POOL, "local": topo.LOCAL_POOL}  # --disk-pool: its pool


def _quiet(_message: str) -> None:
    return None


def create_guest(
    name: str,
    host: str,
    *,
    memory_mb: int = 512,
    working_set_mb: int = 256,
    dirty_mb_s: int = 0,
    portgroup: str | None = None,
    agent: bool = True,
    watched: bool = True,
    disk_pool: str = "shared",
    data_disk_mb: int = DATA_DISK_MB,
    boot_timeout_s: float = 60,
    progress: Progress = _quiet,
) -> GuestRecord:
    """Define and start a lab guest on ``host``; return once its heartbeat is seen.

    ``disk_pool``: ``shared`` puts its data disk in the pool every lab host sees (a live move
    needs no disk copy), ``local`` in ``host``'s own pool (``default``, the host's private
    /var/lib/libvirt/images): no other host sees it, as with a server's local disks.

    ``agent=False`` leaves out the guest agent's channel; ``watched=False`` keeps the lab's
    console and echo witness away from it: with both, vmferry knows nothing of the guest
    beyond its hosts' libvirt, like a VM on a user's host with no agent and no probe."""
    if not _NAME.match(name):
        raise BadInputError(f"guest name {name!r}: use 1-48 letters, digits, '-' or '_'")
    if not 128 <= memory_mb <= 16384:
        raise BadInputError("--memory-mb must be between 128 and 16384")
    if not 0 <= working_set_mb <= memory_mb - 96:
        raise BadInputError(f"--working-set-mb must be between 0 and {memory_mb - 96} "
                            f"(memory minus 96 MiB for the guest's kernel)")  # fmt: skip
    if not 1 <= data_disk_mb <= 65536:
        raise BadInputError("the data disk must be between 1 and 65536 MiB")
    if not 0 <= dirty_mb_s <= 4096:
        raise BadInputError("--dirty-mb-s must be between 0 and 4096")
    if disk_pool not in DISK_POOLS:
        raise BadInputError(f"--disk-pool must be one of {', '.join(DISK_POOLS)} "
                            f"(got {disk_pool!r})")  # fmt: skip
    base = lab_dir()
    state = load_state(base)
    if state is None or not is_running(state):
        raise BadInputError("no lab is up; run `vmferry lab up` first")
    lab_host = topology_of(state).host(host)
    if lab_host is None:
        names = ", ".join(h.name for h in topology_of(state).hosts)
        raise NotFoundError(f"no lab host {host!r}; the lab has {names}")
    if name in state.guests:
        raise AlreadyExistsError(f"lab guest {name!r} exists on {state.guests[name].host}")

    progress("building the guest image (cached after the first time)")
    image = build_guest_image(default_cache_dir(), progress=progress)
    octet = topo.free_guest_octet({g.octet for g in state.guests.values()})
    shared = base / "shared"
    volume = f"{name}-data.qcow2"
    console_log = shared / "consoles" / f"{name}.log"
    spec = LabGuestSpec(
        name=name,
        memory_mb=memory_mb,
        working_set_mb=working_set_mb,
        dirty_mb_s=dirty_mb_s,
        address=topo.guest_addr(octet),
        mac=topo.guest_mac(octet),
        kernel=str(image.kernel),
        initrd=str(image.initrd),
        console_log=str(console_log),
        data_volume=volume,
        portgroup=portgroup,
        agent=agent,
        data_pool=DISK_POOLS[disk_pool],
    )
    with LibvirtHost.connect(lab_host.name, lab_host.uri) as conn:
        if any(r.spec.name == name for r in conn.list_vms()):
            raise AlreadyExistsError(f"a VM named {name!r} is already defined on {host}")
        local = disk_pool == "local"
        data_path = (local_pool_dir(base, lab_host) if local else shared / "pool") / volume
        progress(f"writing the data disk {data_path}")
        sha = make_data_disk(data_path, data_disk_mb)
        if local:
            conn.refresh_pool(topo.LOCAL_POOL)
        else:
            _refresh_shared_pool(topology_of(state))
        console_log.unlink(missing_ok=True)
        record = GuestRecord(name=name, host=host, octet=octet, address=spec.address,
                             mac=spec.mac, console=str(console_log), data_disk=str(data_path),
                             data_sha256=sha, watched=watched)  # fmt: skip
        progress(f"defining and starting {name} on {host}")
        try:
            conn.define_xml(lab_guest_xml(spec))
            conn.start(name)
            progress("waiting for the guest's heartbeat")
            with ConsoleTail(console_log) as tail:
                tail.wait_for(lambda line: isinstance(line.event, Heartbeat), boot_timeout_s)
        except BaseException:  # a failed or interrupted create leaves nothing behind
            _undo(conn, name)
            data_path.unlink(missing_ok=True)
            raise
    state.guests[name] = record
    save_state(state, base)
    return record


def local_pool_dir(base: Path, lab_host: topo.LabHost) -> Path:
    """Where ``lab_host``'s own pool (``default``) keeps its volumes, seen from outside the
    host (its libvirtd sees /var/lib/libvirt/images)."""
    return daemons.host_dir(base, lab_host) / "lib" / "images"


def _refresh_shared_pool(topology: topo.LabTopology) -> None:
    """Every host sees the shared pool, but each libvirtd lists a new volume only after a
    refresh (as with NFS pools in production)."""
    for lab_host in topology.hosts:
        with LibvirtHost.connect(lab_host.name, lab_host.uri) as conn:
            conn.refresh_pool(topo.SHARED_POOL)


def _undo(conn: LibvirtHost, name: str) -> None:
    for step in (conn.destroy, conn.undefine):
        try:
            step(name)
        except Exception:  # best effort: the original error is the one to report
            continue


def get_guest(name: str) -> GuestRecord:
    state = load_state()
    if state is None or name not in state.guests:
        raise NotFoundError(f"no lab guest {name!r}; `vmferry lab status` lists them")
    return state.guests[name]


def delete_guest(name: str, progress: Progress = _quiet) -> None:
    """Stop and undefine a lab guest wherever it runs now, and remove its disk and console."""
    base = lab_dir()
    state = load_state(base)
    if state is None or name not in state.guests:
        raise NotFoundError(f"no lab guest {name!r}; `vmferry lab status` lists them")
    record = state.guests[name]
    for lab_host in topology_of(state).hosts:
        with LibvirtHost.connect(lab_host.name, lab_host.uri) as conn:
            if any(r.spec.name == name for r in conn.list_vms()):
                progress(f"removing {name} from {lab_host.name}")
                _undo(conn, name)
    Path(record.data_disk).unlink(missing_ok=True)
    for lab_host in topology_of(state).hosts:  # a copy a disk-copying move left there
        (local_pool_dir(base, lab_host) / Path(record.data_disk).name).unlink(missing_ok=True)
    Path(record.console).unlink(missing_ok=True)
    _refresh_shared_pool(topology_of(state))
    del state.guests[name]
    save_state(state, base)


def note_moved(name: str, host: str) -> None:
    """Record that a lab guest now runs on ``host`` (after a migration vmferry did not run)."""
    state = load_state()
    if state is not None and name in state.guests:
        state.guests[name].host = host
        save_state(state)
