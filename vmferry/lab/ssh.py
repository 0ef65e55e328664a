"""The lab hosts' sshd: vmferry runs its host-side commands (nft, tc, bridge reads) on the
lab's hosts over SSH, as on a user's (``ssh://`` shells, :mod:`vmferry.drivers.host_exec`).

``lab up`` makes a client key, a host key per host, ``authorized_keys`` and a
``known_hosts`` with every host's key under ``<lab dir>/ssh``, and starts one sshd per host
in its network namespace, listening on its management address only.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from vmferry.errors import LabError
from vmferry.lab import topology as topo
from vmferry.lab.processes import start_ticks
from vmferry.lab.state import ProcessRecord

SSHD = Path("/usr/sbin/sshd")
SSH_PORT = 22


def ssh_dir(base: Path) -> Path:
    return base / "ssh"


def client_key(base: Path) -> Path:
    return ssh_dir(base) / "id_ed25519"


def known_hosts(base: Path) -> Path:
    return ssh_dir(base) / "known_hosts"


def shell_for(base: Path, host: topo.LabHost) -> str:
    """The host record's shell: root over SSH with the lab's key and known hosts."""
    return (f"ssh://root@{host.mgmt_addr}?keyfile={client_key(base)}"
            f"&known_hosts={known_hosts(base)}")  # fmt: skip


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip


def make_lab_ssh(base: Path, hosts: tuple[topo.LabHost, ...]) -> None:
    """Keys, authorized_keys, known_hosts and each host's sshd_config."""
    if not SSHD.exists():
        raise LabError(f"{SSHD} not found; apt-get install openssh-server (make install does)")
    root = ssh_dir(base)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _keygen(client_key(base), "vmferry-lab-client")
    (root / "authorized_keys").write_text(Path(f"{client_key(base)}.pub").read_text())
    lines = []
    for host in hosts:
        hdir = root / "hosts" / host.name
        hdir.mkdir(parents=True, exist_ok=True)
        _keygen(hdir / "host_ed25519", f"vmferry-lab-{host.name}")
        key = (hdir / "host_ed25519.pub").read_text().split()
        lines.append(f"{host.mgmt_addr} {key[0]} {key[1]}\n")
        (hdir / "sshd_config").write_text(
            f"ListenAddress {host.mgmt_addr}:{SSH_PORT}\n"
            f"HostKey {hdir / 'host_ed25519'}\n"
            f"PidFile {hdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PrintMotd no\n"
        )
    known_hosts(base).write_text("".join(lines))


def start_sshd(base: Path, host: topo.LabHost, *, timeout_s: float = 15) -> ProcessRecord:
    """Start ``host``'s sshd in its namespace and wait until it answers."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    hdir = ssh_dir(base) / "hosts" / host.name
    log = (hdir / "sshd.log").open("w")
    sshd = subprocess.Popen(["ip", "netns", "exec", host.netns, str(SSHD), "-D", "-e", "-f",
                             str(hdir / "sshd_config")], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sshd.poll() is not None:
            raise LabError(f"sshd for {host.name} did not start; see {hdir / 'sshd.log'}")
        try:
            socket.create_connection((host.mgmt_addr, SSH_PORT), timeout=1).close()
        except OSError:
            time.sleep(0.05)
            continue
        ticks = start_ticks(sshd.pid)
        if ticks is None:
            break
        return ProcessRecord(sshd.pid, "sshd", host.name, ticks)
    raise LabError(f"sshd for {host.name} did not answer on {host.mgmt_addr}:{SSH_PORT} within "
                   f"{timeout_s:g} s; see {hdir / 'sshd.log'}")  # fmt: skip
