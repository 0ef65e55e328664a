"""qemu-img as vmferry runs it on untrusted disks: format always stated, limits on CPU time and
memory, progress read from ``-p``, the whole process group killed on Ctrl-C or a timeout.

Nothing here probes an input's format: the caller has read the header in Python
(``vmferry.sources``) and passes the format it found.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmferry.errors import ToolError

ProgressFn = Callable[[float], None]

_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


@dataclass(frozen=True)
class ToolLimits:
    """Resource limits for one qemu-img process (RLIMIT_CPU, RLIMIT_AS) and a wall clock."""

    cpu_seconds: int = 3600
    memory_bytes: int = 2 * 2**30
    timeout_s: float = 6 * 3600


DEFAULT_LIMITS = ToolLimits()


def parse_progress(chunk: bytes) -> float | None:
    """The last percentage in a piece of ``qemu-img -p`` output, ``(12.50/100%)``."""
    found = _PERCENT.findall(chunk)
    return float(found[-1]) if found else None


def limited(limits: ToolLimits) -> Callable[[], None]:
    """A ``preexec_fn``: own process group (setsid), RLIMIT_CPU and RLIMIT_AS."""

    def apply() -> None:
        os.setsid()  # its own process group: Ctrl-C and timeouts kill it and its children
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))

    return apply


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill its process group while it still runs (not after: its id may be reused)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_limited(
    argv: Sequence[str],
    limits: ToolLimits,
    *,
    on_progress: ProgressFn | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> tuple[int, str]:
    """Run ``argv`` under ``limits``; return (exit code, stderr+stdout tail).

    A code outside ``ok_codes``, a signal (CPU limit), or the timeout raise ToolError. On
    KeyboardInterrupt the process group is killed before the interrupt goes on.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=limited(limits),
        )
    except FileNotFoundError as exc:
        raise ToolError(f"{argv[0]} is not installed; run `make install`") from exc
    assert proc.stdout is not None
    deadline = time.monotonic() + limits.timeout_s
    tail = b""
    try:
        while True:
            if time.monotonic() > deadline:
                kill_group(proc)
                raise ToolError(f"{Path(argv[0]).name} did not finish within "
                                f"{limits.timeout_s:g} s")  # fmt: skip
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            tail = (tail + chunk)[-4096:]
            if on_progress is not None:
                percent = parse_progress(chunk)
                if percent is not None:
                    on_progress(percent)
        code = proc.wait()
    except BaseException:
        kill_group(proc)
        raise
    text = tail.decode(errors="replace")
    if code not in ok_codes:
        lines = [ln.strip() for ln in re.split(r"[\r\n]", text) if ln.strip()]
        lines = [ln for ln in lines if not _PERCENT.fullmatch(ln.encode())]
        last = lines[-1] if lines else ""
        if code < 0:
            last = f"killed by signal {-code} (CPU-time or memory limit?) {last}".strip()
        raise ToolError(f"{Path(argv[0]).name} {argv[1]} failed: {last or f'exit {code}'}")
    return code, text


def convert(
    source: Path,
    source_format: str,
    target: Path,
    *,
    target_format: str = "qcow2",
    limits: ToolLimits = ToolLimits(),
    on_progress: ProgressFn | None = None,
) -> None:
    """Convert ``source`` (its format stated) to a new sparse ``target``.

    Zero and unallocated areas are skipped (qemu-img's sparse detection). The target is not
    on disk when this returns: convert's default cache mode for its output is ``unsafe`` (a
    ``sync`` after it took 1.3-1.6 s on QEMU 7.2 and 10, and nothing after ``-t
    writeback``); a caller that needs it durable fsyncs it. The options are qemu-img's
    defaults: out-of-order
    writes (``-W``) and O_DIRECT gave no steady gain on this kind of machine, where the
    timings of a 1 GiB copy vary by 2x from run to run with the disk's write-back.
    """
    argv = ["qemu-img", "convert", "-p", "-f", source_format, "-O", target_format]
    run_limited([*argv, str(source), str(target)], limits, on_progress=on_progress)


def allocated_bytes(path: Path) -> int:
    """Bytes the file really occupies on disk."""
    return path.stat().st_blocks * 512
