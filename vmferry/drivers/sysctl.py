"""Read and set a kernel parameter on a host (``sysctl``), through its shell."""

from __future__ import annotations

from vmferry.drivers.host_exec import HostExec
from vmferry.errors import VmferryError

__all__ = ["read_int", "write"]


def read_int(host: HostExec, name: str) -> int:
    done = host.run(["sysctl", "-n", name])
    try:
        return int(done.stdout.strip())
    except ValueError as exc:
        raise VmferryError(f"sysctl {name} on {host.host} is not a number: "
                           f"{done.stdout.strip()[:80]!r}") from exc  # fmt: skip


def write(host: HostExec, name: str, value: int) -> None:
    host.run(["sysctl", "-q", "-w", f"{name}={value}"])
