"""A datastore file served read-only over NBD by nbdkit's curl plugin, for a live import:
the destination host's QEMU reads the VM's disk from it (its backing) while the import streams
the disk into a local overlay.

nbdkit runs on this machine, in the foreground and in its own process group, and dies with
vmferry (``--exit-with-parent``). The filters, outermost first:

- ``exportname``: a client must ask for the export by its name, a random token the import
  makes (the destination's domain XML holds it), and cannot list it; the export is
  read-only. There is no TLS on this NBD connection: the token crosses the network in
  clear, like the disk's data (nbdkit 1.32's ``ip`` filter parses no IPv4 address, so
  the clients' addresses are not checked);
- ``truncate``: the export ends at the disk's capacity (a flat extent may be longer);
- ``retry``: a broken download is reopened and its request retried, ``RETRIES`` times with
  a delay doubling from 1 s (a longer outage reaches QEMU as an I/O error; the import then
  resumes the stream itself).

The session cookie goes to nbdkit in a file of the import's private directory (``cookie=+``),
never on its command line.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vmferry.errors import ToolError

__all__ = [
    "DatastoreExport",
    "NbdkitServer",
    "nbdkit_argv",
    "pick_port",
    "route_source",
    "serve_all",
]

RETRIES = 3
START_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 60


@dataclass(frozen=True)
class DatastoreExport:
    """What one nbdkit serves: the file's HTTPS URL, its size as the guest sees it, how TLS
    is checked (``ca_file``, or no check when ``insecure``), the cookie file, where it
    listens and the export's name (a secret token)."""

    url: str
    size: int
    cookie_file: Path
    address: str
    port: int
    name: str = field(repr=False)
    ca_file: str | None = None
    insecure: bool = False


def nbdkit_argv(export: DatastoreExport, pidfile: Path) -> list[str]:
    """nbdkit's command line for ``export``, its pid written to ``pidfile`` once it
    listens (pure)."""
    argv = [
        "nbdkit", "--foreground", "--exit-with-parent", "--readonly", "--pidfile", str(pidfile),
        "--ipaddr", export.address, "--port", str(export.port),
        "--filter=exportname", "--filter=truncate", "--filter=retry",
        "curl", f"url={export.url}", f"cookie=+{export.cookie_file}",
        f"timeout={REQUEST_TIMEOUT_S}",
        f"exportname={export.name}", "exportname-strict=true", "exportname-list=error",
        f"truncate={export.size}",
        f"retries={RETRIES}", "retry-delay=1", "retry-readonly=true",
    ]  # fmt: skip
    if export.insecure:
        argv.append("sslverify=false")
    elif export.ca_file:
        argv.append(f"cainfo={export.ca_file}")
    return argv


def route_source(peer: str) -> str:
    """This machine's address on its route to ``peer`` (a name or an address): the one a
    host reaches it at. No packet is sent (a UDP socket is only connected)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((peer, 9))
            found: str = probe.getsockname()[0]
    except OSError as exc:
        raise ToolError(f"no route from this machine to {peer}: {exc}") from exc
    return found


def pick_port(address: str) -> int:
    """A TCP port free on ``address`` now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
    return port


class NbdkitServer:
    """One nbdkit serving ``export``; :meth:`restart` starts it again on the same address
    and port (QEMU's NBD client reconnects there)."""

    def __init__(self, export: DatastoreExport, errors: Path) -> None:
        self.export = export
        self.errors = errors
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start nbdkit and wait until it listens (it writes its pid file then), or fail
        with its last message (the port taken, the plugin refusing a parameter)."""
        ready = self.errors.with_suffix(".pid")
        ready.unlink(missing_ok=True)
        with self.errors.open("ab") as err:
            self.proc = subprocess.Popen(
                nbdkit_argv(self.export, ready),
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (ready.exists() and ready.read_text().strip()):
            if self.proc.poll() is not None:
                self.proc = None
                raise ToolError(f"nbdkit could not serve {self.export.url}: {self.last_message()}")
            if time.monotonic() > deadline:
                self.stop()
                where = f"{self.export.address}:{self.export.port}"
                raise ToolError(f"nbdkit did not listen on {where} in {START_TIMEOUT_S:g} s")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                self.proc.wait()
        self.proc = None

    def last_message(self) -> str:
        """nbdkit's last line of messages (its error, when it fails)."""
        try:
            lines = self.errors.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no message"
        return lines[-1] if lines else "no message"


def serve_all(exports: Sequence[DatastoreExport], directory: Path) -> list[NbdkitServer]:
    """Start one nbdkit per export (their messages in ``directory``); all or none."""
    servers: list[NbdkitServer] = []
    try:
        for index, export in enumerate(exports):
            server = NbdkitServer(export, directory / f"nbdkit-{index}.log")
            server.start()
            servers.append(server)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
