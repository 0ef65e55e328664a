from __future__ import annotations

from pathlib import Path

from vmferry.lab.cgroups import Hierarchy, parse_mountinfo

V1 = """\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
40 25 0:40 / /run rw - tmpfs tmpfs rw
"""
V2 = "35 25 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_v1_hierarchies_keep_their_controllers() -> None:
    assert parse_mountinfo(V1) == [
        Hierarchy(Path("/sys/fs/cgroup/cpu"), 1, "cpu"),
        Hierarchy(Path("/sys/fs/cgroup/cpu,cpuacct"), 1, "cpu,cpuacct"),
        Hierarchy(Path("/sys/fs/cgroup/systemd"), 1, "xattr,name=systemd"),
    ]


def test_v2_unified_hierarchy() -> None:
    assert parse_mountinfo(V2) == [Hierarchy(Path("/sys/fs/cgroup"), 2, "")]


def test_garbage_is_ignored() -> None:
    assert parse_mountinfo("no separator here\n - cgroup\n") == []
