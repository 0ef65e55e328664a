"""Read and set a kernel parameter on a host (``sysctl``), through its shell."""

from __future__ import annotations

from vmferry.drivers.host_exec import HostExec
from vmferry.errors import VmferryError

__all__ = ["read_int", "write"]


def read_int(host: HostExec, name: str, timeout_s: float = 30) -> int:
    done = host.run(["sysctl", "-n", name], timeout_s=timeout_s)
    try:
        return int(done.stdout.strip())
    except ValueError as exc:
        raise VmferryError(f"sysctl {name} on {host.host} is not a number: "
                           f"{done.stdout.strip()[:80]!r}") from exc  # fmt: skip


def write(host: HostExec, name: str, value: int, timeout_s: float = 30) -> None:
    host.run(["sysctl", "-q", "-w", f"{name}={value}"], timeout_s=timeout_s)
