"""qemu-nbd as vmferry runs it: one image served on a Unix socket in a private directory, its
format stated (never probed), under the same limits as qemu-img, in its own process group.

``serve`` yields a connected ``NbdClient``. qemu-nbd serves one client and exits when that
client says goodbye; leaving the ``with`` block normally waits for that exit (for a written
image: the image closed, its metadata written). On an error or Ctrl-C its process group is
killed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from vmferry.drivers.nbd_client import NbdClient
from vmferry.drivers.qemu_img import DEFAULT_LIMITS, ToolLimits, kill_group, limited
from vmferry.errors import ToolError

START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 120.0


@contextlib.contextmanager
def serve(
    image: Path,
    fmt: str,
    *,
    writable: bool = False,
    cache: str = "writeback",
    limits: ToolLimits = DEFAULT_LIMITS,
) -> Iterator[NbdClient]:
    """Serve ``image`` (format ``fmt``) read-only, or ``writable``, and connect to it.

    ``cache`` is qemu-nbd's ``--cache``; ``unsafe`` ignores flushes (the caller then makes
    the file durable itself).
    """
    directory = Path(tempfile.mkdtemp(prefix="vmferry-nbd-"))
    socket_path = directory / "nbd.sock"
    argv = ["qemu-nbd", "--format", fmt, "--socket", str(socket_path), "--cache", cache]
    if not writable:
        argv.append("--read-only")
    argv.append(str(image))
    errors = (directory / "stderr").open("w+b")
    try:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=errors,
                stderr=errors,
                preexec_fn=limited(limits),
            )
        except FileNotFoundError as exc:
            raise ToolError("qemu-nbd is not installed; run `make install`") from exc
        client: NbdClient | None = None
        try:
            client = _connect(proc, socket_path, errors, image)
            yield client
            client.close()
            client = None
            _wait_exit(proc, errors, image)
        finally:
            if client is not None:
                client.abandon()
            kill_group(proc)
    finally:
        errors.close()
        shutil.rmtree(directory, ignore_errors=True)


def _connect(
    proc: subprocess.Popen[bytes], socket_path: Path, errors: IO[bytes], image: Path
) -> NbdClient:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise _could_not_serve(image, errors)
        if socket_path.exists():
            try:
                return NbdClient.connect(socket_path)
            except ToolError:
                if proc.poll() is not None:  # it bound its socket, then gave up: say why
                    raise _could_not_serve(image, errors) from None
                if time.monotonic() > deadline:
                    raise
        if time.monotonic() > deadline:
            raise ToolError(f"qemu-nbd did not serve {image.name} within {START_TIMEOUT_S:g} s")
        time.sleep(0.01)


def _could_not_serve(image: Path, errors: IO[bytes]) -> ToolError:
    return ToolError(f"qemu-nbd could not serve {image.name}: {_last_line(errors)}")


def _wait_exit(proc: subprocess.Popen[bytes], errors: IO[bytes], image: Path) -> None:
    try:
        code = proc.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"qemu-nbd did not close {image.name} within {EXIT_TIMEOUT_S:g} s") from exc
    if code != 0:
        reason = f"killed by signal {-code}" if code < 0 else _last_line(errors)
        raise ToolError(f"qemu-nbd failed on {image.name}: {reason}")


def _last_line(errors: IO[bytes]) -> str:
    errors.seek(0)
    lines = [ln.strip() for ln in errors.read().decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "no message"
