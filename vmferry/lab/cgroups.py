"""A cgroup subtree per lab host, so each host's libvirtd manages its VMs' cgroups (vCPU
quotas, as production hosts do) without colliding with the other hosts on this machine.

The holder joins ``<hierarchy>/vmferry-lab/<host>`` before it unshares a cgroup namespace;
inside, the hierarchies are mounted again, so that subtree is the host's whole cgroup world.
Works with cgroup v1 (one mount per controller) and v2 (the unified hierarchy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LAB_GROUP = "vmferry-lab"


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: where it is and the options it was mounted with."""

    mountpoint: Path
    version: int  # 1 or 2
    options: str  # v1: the controllers (``cpu,cpuacct``) or ``name=systemd``; v2: ""


def parse_mountinfo(text: str) -> list[Hierarchy]:
    """Pure: the cgroup hierarchies in /proc/self/mountinfo's text."""
    found: list[Hierarchy] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, super_options = tail[0], tail[2]
        mountpoint = Path(fields[4].replace("\\040", " "))
        if fstype == "cgroup2":
            found.append(Hierarchy(mountpoint, 2, ""))
        elif fstype == "cgroup":
            opts = [o for o in super_options.split(",") if o not in ("rw", "ro")]
            found.append(Hierarchy(mountpoint, 1, ",".join(opts)))
    return found


def hierarchies() -> list[Hierarchy]:
    return parse_mountinfo(Path("/proc/self/mountinfo").read_text())


def host_groups(host: str) -> list[Path]:
    """Create the host's group in every hierarchy (idempotent); return their paths."""
    paths = []
    for h in hierarchies():
        group = h.mountpoint / LAB_GROUP / host
        for level in (group.parent, group):
            level.mkdir(exist_ok=True)
            _inherit_cpuset(level)
        paths.append(group)
    return paths


def _inherit_cpuset(group: Path) -> None:
    """A v1 cpuset group takes no task until its cpus and mems are set: copy the parent's."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine, parents = group / name, group.parent / name
        if mine.exists() and not mine.read_text().strip():
            mine.write_text(parents.read_text())


def join(groups: list[Path]) -> None:
    """Move the calling process into ``groups`` (used in the holder before it execs)."""
    pid = str(os.getpid())
    for group in groups:
        procs = group / "cgroup.procs"
        (procs if procs.exists() else group / "tasks").write_text(pid)


def mount_script() -> str:
    """Shell lines that mount the hierarchies again inside the host's cgroup namespace."""
    lines = []
    found = hierarchies()
    if any(h.version == 1 for h in found):
        lines.append("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup")
    for h in found:
        target = h.mountpoint
        if h.version == 2 and target == Path("/sys/fs/cgroup"):
            lines.append("mount -t cgroup2 cgroup2 /sys/fs/cgroup")
        elif h.version == 2:
            lines.append(f"mkdir -p {target} && mount -t cgroup2 cgroup2 {target}")
        else:
            lines.append(f"mkdir -p {target} && mount -t cgroup -o {h.options} cgroup {target}")
    return "\n".join(lines)


def remove_host_groups(host: str) -> list[str]:
    """Remove the host's groups (deepest first, as libvirt may leave machine groups behind)."""
    problems: list[str] = []
    for h in hierarchies():
        root = h.mountpoint / LAB_GROUP / host
        if not root.exists():
            continue
        for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir(path, problems)
        _rmdir(root, problems)
        parent = root.parent
        if parent.exists() and not any(p.is_dir() for p in parent.iterdir()):
            _rmdir(parent, problems)
    return problems


def _rmdir(path: Path, problems: list[str]) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"cgroup {path}: {exc.strerror}")
