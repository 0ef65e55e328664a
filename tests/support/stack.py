"""Which QEMU the lab runs on, and whether it can move a TCG guest live.

The lab has no KVM: its guests run under TCG. QEMU before 9.0 loses some of a TCG guest's
writes during a live copy (vmferry's pre-flight finding ``migration.tcg-lost-writes``, see
vmferry/assess/preflight.py), so on Debian 12's own QEMU 7.2 (``VMFERRY_STACK=stock``)
vmferry refuses live moves of lab guests, and the tests whose subject is a live move are
skipped with that reason (marker ``live_moves``). tests/lab/test_preflight_lab.py and
tests/lab/test_demo_lab.py assert the refusal itself on that stack.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

TCG_LIVE_FIXED = (9, 0)


@functools.cache
def lab_qemu_version() -> tuple[int, ...] | None:
    """``qemu-system-x86_64 --version`` as numbers, None when QEMU is not installed."""
    if shutil.which("qemu-system-x86_64") is None:
        return None
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True,
                         check=False).stdout  # fmt: skip
    found = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(n) for n in found.groups()) if found else None


def live_tcg_moves_work() -> bool:
    """Whether this QEMU keeps every write of a TCG guest in a live move (unknown: yes)."""
    version = lab_qemu_version()
    return version is None or version[:2] >= TCG_LIVE_FIXED


def skip_reason() -> str:
    version = ".".join(map(str, lab_qemu_version() or ()))
    return (
        f"QEMU {version} under TCG loses a guest's writes in a live move: vmferry refuses "
        "it (migration.tcg-lost-writes; asserted in test_preflight_lab and test_demo_lab)"
    )
