"""An IPMI BMC for the tests: pyghmi's BMC server (the library OpenStack's VirtualBMC is
built on) answering IPMI 2.0 over UDP on loopback, RMCP+ with a user and password, its
chassis power state kept in a file. ipmitool talks to it as to a server's BMC
(`ipmitool -I lanplus -H 127.0.0.1 -p PORT -U admin -E chassis power status|off|on`).

Run as a script (``python ipmi_bmc.py PORT STATE_FILE``), it serves until killed:
pyghmi's sessions are global to a process, so each BMC is a process of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "admin", "s3cret-ipmi"
ENV = "IPMI_PASSWORD"  # where `ipmitool -E` reads the password


@dataclass(frozen=True)
class IpmiBmc:
    port: int
    state: Path  # "on" or "off"

    def command(self, action: str) -> str:
        """The ipmitool command line for `chassis power ACTION` against this BMC."""
        return (f"ipmitool -I lanplus -H 127.0.0.1 -p {self.port} -U {USER} -E "
                f"chassis power {action}")  # fmt: skip


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(bmc: IpmiBmc) -> bool:
    env = {**os.environ, ENV: PASSWORD}
    done = subprocess.run(bmc.command("status").split(), env=env, capture_output=True,
                          text=True, timeout=10, check=False)  # fmt: skip
    return done.returncode == 0


@contextmanager
def ipmi_bmc(root: Path, power: str = "on") -> Iterator[IpmiBmc]:
    """A BMC process whose chassis is ``power``; killed afterwards."""
    bmc = IpmiBmc(_free_udp_port(), root / "power")
    bmc.state.write_text(f"{power}\n")
    process = subprocess.Popen([sys.executable, __file__, str(bmc.port), str(bmc.state)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not _answers(bmc):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the IPMI BMC did not start: {process.stderr!r}")
            time.sleep(0.2)
        yield bmc
    finally:
        process.kill()
        process.wait()


def _serve(port: int, state: Path) -> None:
    from pyghmi.ipmi import bmc  # type: ignore[import-untyped]

    class FileBmc(bmc.Bmc):  # type: ignore[misc]
        def get_power_state(self) -> str:
            return state.read_text().strip()

        def power_off(self) -> None:
            state.write_text("off\n")

        def power_on(self) -> None:
            state.write_text("on\n")

    FileBmc({USER: PASSWORD}, port=port, address="127.0.0.1").listen()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]))
