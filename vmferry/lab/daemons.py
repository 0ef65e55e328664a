"""Run one libvirtd (with virtlogd and virtlockd) per lab host, each in its own network and
mount namespace.

The recipe is LAB-NOTES': inside ``ip netns exec HOST unshare -m -u --propagation private`` a
shell bind-mounts the host's private directories over libvirt's, starts virtlogd, virtlockd
and libvirtd with their own pidfiles, and stays alive as ``sleep`` holding the namespace.

Disk locking: every host's QEMU driver uses the ``lockd`` lock manager, its leases in one
lockspace directory on the lab's shared storage (:func:`lockspace_dir`), so a disk one host
runs a VM from cannot be opened for writing by a VM started on another (HA's second guard).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from vmferry.errors import LabError
from vmferry.lab import cgroups
from vmferry.lab import topology as topo
from vmferry.lab.processes import read_pidfile, start_ticks
from vmferry.lab.state import ProcessRecord

LIBVIRT_DIRS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
    "etc": "/etc/libvirt",
}

_HOLDER_SCRIPT = r"""
set -eu
d="$1"
hostname "$2"
@CGROUP_MOUNTS@
for pair in run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt \
            log:/var/log/libvirt etc:/etc/libvirt; do
  mkdir -p "${pair#*:}"
  mount --bind "$d/${pair%%:*}" "${pair#*:}"
done
virtlogd -d -p /run/libvirt/virtlogd.pid
virtlockd -d -p /run/libvirt/virtlockd.pid
libvirtd -d --listen -p /run/libvirt/libvirtd.pid
echo READY
exec sleep infinity
"""


# The holder runs under tini as a child subreaper: the daemons it starts detach (-d), and
# libvirtd detaches every QEMU it starts, so each of them is orphaned and would be adopted
# by this machine's PID 1. A systemd host reaps a dead QEMU at once; this machine's PID 1
# (a sandbox's init) leaves it a zombie for about 1.6 s, and libvirt, which waits for a
# killed QEMU's pid to vanish, adds that to every destroy and to the end of every
# migration. Adopted by tini, a dead daemon or QEMU is reaped at once, as on a real host.
HOLDER_REAPER = ("tini", "-s", "--")


def host_dir(base: Path, host: topo.LabHost) -> Path:
    return base / "hosts" / host.name


def lockspace_dir(base: Path) -> Path:
    """The disk leases of every lab host (virtlockd's ``file_lockspace_dir``), on the shared
    storage as on hosts that share an NFS export."""
    return base / "shared" / "lockspace"


CAPS_SUBDIR = Path("qemu") / "capabilities"


def capabilities_seed_dir() -> Path:
    """Where the lab keeps libvirt's probed QEMU capabilities between labs.

    A fresh libvirtd probes every QEMU binary on the first connection that needs them (about
    10 s each under TCG); seeding each lab host's cache from here keeps that cost out of the
    first migration. libvirt itself revalidates the cache (binary ctime, libvirt version), so
    a seed taken on another stack would be probed again in every lab: each stack (QEMU's and
    libvirtd's binaries as installed) has a seed of its own.
    """
    root = Path(os.environ.get("VMFERRY_CACHE", "/var/cache/vmferry")) / "libvirt-capabilities"
    return root / _stack_key()


def _stack_key() -> str:
    """Size and change time of the QEMU and libvirtd binaries: new after any (re)install."""
    parts = []
    for name in ("qemu-system-x86_64", "libvirtd"):
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
        if path is None:
            parts.append(f"{name}:missing")
            continue
        st = os.stat(path)
        parts.append(f"{name}:{st.st_size}:{st.st_ctime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def prepare_host_dir(base: Path, host: topo.LabHost, libvirt_pki: Path, qemu_pki: Path) -> Path:
    """Fresh private libvirt directories for ``host``, configured for the lab: libvirtd
    listens with TLS (its files in ``libvirt_pki``), or on plain TCP with no authentication
    for a lab brought up with ``--insecure-tcp``; QEMU's migration TLS files are in
    ``qemu_pki``."""
    root = host_dir(base, host)
    if root.exists():
        shutil.rmtree(root)
    for sub in LIBVIRT_DIRS:
        if sub != "etc":
            (root / sub).mkdir(parents=True)
    (root / "lib" / "images").mkdir()
    seed = capabilities_seed_dir()
    if seed.is_dir():
        shutil.copytree(seed, root / "cache" / CAPS_SUBDIR)
    shutil.copytree("/etc/libvirt", root / "etc", symlinks=True)
    networks = root / "etc" / "qemu" / "networks"
    if networks.exists():  # no default NAT network: it would want dnsmasq and iptables
        shutil.rmtree(networks)
    for domain_xml in (root / "etc" / "qemu").glob("*.xml"):
        domain_xml.unlink()
    with (root / "etc" / "libvirtd.conf").open("a") as conf:
        conf.write(f'\n# vmferry lab\nhost_uuid = "{host.host_uuid}"\n'
                   f'listen_addr = "{host.mgmt_addr}"\n')  # fmt: skip
        if host.transport == "tcp":
            conf.write("# --insecure-tcp: no authentication, no encryption (never outside a lab)\n"
                       'listen_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\n')  # fmt: skip
        else:  # a client must show a certificate the lab's CA signed
            conf.write("listen_tls = 1\nlisten_tcp = 0\n"
                       f'ca_file = "{libvirt_pki / "cacert.pem"}"\n'
                       f'cert_file = "{libvirt_pki / "servercert.pem"}"\n'
                       f'key_file = "{libvirt_pki / "serverkey.pem"}"\n')  # fmt: skip
    with (root / "etc" / "qemu.conf").open("a") as conf:
        conf.write(
            "\n# vmferry lab\n"
            'user = "root"\ngroup = "root"\n'
            "dynamic_ownership = 0\nremember_owner = 0\n"
            'security_driver = "none"\n'
            f'migration_host = "{host.migration_addr}"\n'
            f'migration_address = "{host.migration_addr}"\n'
        )
        if host.transport == "tls":  # what `vmferry migrate --tls` encrypts the stream with
            conf.write(f'migrate_tls_x509_cert_dir = "{qemu_pki}"\nmigrate_tls_x509_verify = 1\n')
        conf.write('lock_manager = "lockd"\n')
    leases = lockspace_dir(base)
    leases.mkdir(parents=True, exist_ok=True)
    (root / "etc" / "qemu-lockd.conf").write_text(
        "# vmferry lab: a lease for every disk, in a lockspace all lab hosts share\n"
        "auto_disk_leases = 1\nrequire_lease_for_disks = 1\n"
        f'file_lockspace_dir = "{leases}"\n'
    )
    return root


def start_host_daemons(
    base: Path, host: topo.LabHost, *, timeout_s: float = 30
) -> list[ProcessRecord]:
    """Start the holder, virtlogd, virtlockd and libvirtd of ``host``; wait until libvirtd
    answers."""
    root = host_dir(base, host)
    log = (root / "holder.log").open("w")
    groups = cgroups.host_groups(host.name)
    script = _HOLDER_SCRIPT.replace("@CGROUP_MOUNTS@", cgroups.mount_script())
    holder = subprocess.Popen(
        ["ip", "netns", "exec", host.netns,
         "unshare", "-m", "-u", "-C", "--propagation", "private",
         *HOLDER_REAPER, "sh", "-c", script, "vmferry-lab-holder", str(root), host.name],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: cgroups.join(groups),
    )  # fmt: skip
    log.close()
    records: list[ProcessRecord] = []
    ticks = start_ticks(holder.pid)
    if ticks is not None:
        records.append(ProcessRecord(holder.pid, "holder", host.name, ticks))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if holder.poll() is not None:
            raise LabError(
                f"libvirtd for {host.name} did not start: "
                f"{_last_line(root / 'holder.log')} (see {root / 'holder.log'})"
            )
        if "READY" in (root / "holder.log").read_text() and _answers(
            host.mgmt_addr, host.libvirt_port
        ):
            break
        time.sleep(0.1)
    else:
        raise LabError(f"libvirtd for {host.name} did not answer on "
                       f"{host.mgmt_addr}:{host.libvirt_port} "
                       f"within {timeout_s:g} s; see {root / 'log'}")  # fmt: skip
    for role in ("virtlogd", "virtlockd", "libvirtd"):
        pid = read_pidfile(root / "run" / f"{role}.pid")
        ticks = start_ticks(pid) if pid else None
        if pid is None or ticks is None:
            raise LabError(f"{role} of {host.name} wrote no pidfile in {root / 'run'}")
        records.append(ProcessRecord(pid, role, host.name, ticks))
    return records


def restart_libvirtd(base: Path, host: topo.LabHost, holder_pid: int,
                     *, timeout_s: float = 30) -> ProcessRecord:  # fmt: skip
    """Start ``host``'s libvirtd again inside its holder's namespaces (after a fault test
    killed it); libvirt then reconnects to its running QEMU processes."""
    root = host_dir(base, host)
    pidfile = root / "run" / "libvirtd.pid"
    pidfile.unlink(missing_ok=True)
    subprocess.run(
        ["nsenter", "-t", str(holder_pid), "-m", "-n", "-u", "-C",
         "libvirtd", "-d", "--listen", "-p", "/run/libvirt/libvirtd.pid"],
        check=True, capture_output=True, timeout=timeout_s,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = read_pidfile(pidfile)
        ticks = start_ticks(pid) if pid else None
        if pid and ticks is not None and _answers(host.mgmt_addr, host.libvirt_port):
            return ProcessRecord(pid, "libvirtd", host.name, ticks)
        time.sleep(0.1)
    raise LabError(f"libvirtd of {host.name} did not come back within {timeout_s:g} s")


def save_capabilities_seed(base: Path, host: topo.LabHost) -> None:
    """Keep ``host``'s probed QEMU capabilities as the seed for later lab hosts."""
    probed = host_dir(base, host) / "cache" / CAPS_SUBDIR
    if not probed.is_dir() or not any(probed.iterdir()):
        return
    seed = capabilities_seed_dir()
    seed.parent.mkdir(parents=True, exist_ok=True)
    tmp = seed.with_name(seed.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(probed, tmp)
    shutil.rmtree(seed, ignore_errors=True)
    os.replace(tmp, seed)


def qemu_pids(base: Path, host_name: str) -> list[int]:
    """Pids of the QEMU processes a lab host's libvirtd started (from libvirt's pidfiles)."""
    qemu_run = base / "hosts" / host_name / "run" / "qemu"
    pids = [read_pidfile(p) for p in sorted(qemu_run.glob("*.pid"))]
    return [p for p in pids if p is not None]


def _answers(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=0.5):
            return True
    except OSError:
        return False


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
