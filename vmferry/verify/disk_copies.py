"""Judge the disks a live move copied (``--copy-storage``): pure, from what the hosts said.

Before the move vmferry knows each copied disk's path, capacity and format on the source;
after it, the destination's record of the running VM says which volume each target is now
and its size. A copy is verified when the destination's disk of that target is a volume
libvirt knows there, of the source's capacity and format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vmferry.model.migration import DiskCopy
from vmferry.model.vm import Disk

__all__ = ["judge_copies"]


def judge_copies(
    copied: Sequence[str],
    before: Sequence[Disk],
    source_paths: Mapping[str, str | None],
    after: Sequence[Disk] | None,
    destination_paths: Mapping[str, str | None],
    *,
    source: str,
    destination: str,
) -> tuple[DiskCopy, ...]:
    """One :class:`DiskCopy` per target in ``copied``.

    ``before``: the VM's disks on ``source`` before the move (sized); ``source_paths``: each
    target's path there. ``after``: its disks on ``destination`` after the move (None: not
    running there); ``destination_paths``: each target's path there (None: not resolved).
    """
    was = {d.target: d for d in before}
    if after is None:
        why = (f"the VM does not run on {destination}",)
        return tuple(DiskCopy(t, source_paths.get(t), None, False, why) for t in copied)
    now = {d.target: d for d in after}
    judged = []
    for target in copied:
        found = now.get(target)
        if found is None:
            why = (f"the VM on {destination} has no disk {target}",)
            judged.append(DiskCopy(target, source_paths.get(target), None, False, why))
            continue
        judged.append(_judge(target, was.get(target), source_paths.get(target), found,
                             destination_paths.get(target), source, destination))  # fmt: skip
    return tuple(judged)


def _judge(
    target: str,
    was: Disk | None,
    source_path: str | None,
    now: Disk,
    destination_path: str | None,
    source: str,
    destination: str,
) -> DiskCopy:
    checks: list[str] = []
    ok = True
    if destination_path is None:
        ok = False
        checks.append(f"{target} on {destination}: {now.source or 'no source'} is no volume "
                      "libvirt knows there")  # fmt: skip
    else:
        checks.append(f"{target} on {destination}: {destination_path}")
    if was is None or was.capacity_bytes is None:
        ok = False
        checks.append(f"the capacity of {target} on {source} was not known before the move")
    elif now.capacity_bytes != was.capacity_bytes:
        ok = False
        checks.append(f"capacity {_size(now.capacity_bytes)} on {destination}, "
                      f"{_size(was.capacity_bytes)} on {source}")  # fmt: skip
    else:
        checks.append(f"capacity {_size(now.capacity_bytes)} as on {source}")
    if was is not None and was.format != now.format:
        ok = False
        checks.append(f"format {now.format} on {destination}, {was.format} on {source}")
    elif was is not None:
        checks.append(f"format {now.format} as on {source}")
    return DiskCopy(target, source_path, destination_path, ok, tuple(checks))


def _size(value: int | None) -> str:
    if value is None:
        return "unknown"
    return f"{value / 2**20:.0f} MiB" if value < 2**30 else f"{value / 2**30:.2f} GiB"
