"""A Redfish BMC for the tests: OpenStack's sushy-emulator (sushy-tools) with its fake driver,
one ComputerSystem, over HTTPS with a certificate of a throwaway CA and basic
authentication, on loopback. Its power actions take 1-11 s to apply, as a real BMC's do."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from vmferry.lab import pki

SYSTEM_UUID = "6d1b4a2e-4c8f-4b1e-9a51-2f0c6c1f7e10"
USER, PASSWORD = "admin", "s3cret-bmc"
ENV = "VMFERRY_TEST_BMC_PASSWORD"  # where the tests put the password for vmferry


@dataclass(frozen=True)
class Bmc:
    url: str  # the ComputerSystem resource
    ca: Path
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _certificates(root: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1 (the lab's PKI helpers)."""
    ca = pki.make_ca("vmferry test BMC CA")
    server = pki.issue(ca, "127.0.0.1", server=True, addrs=["127.0.0.1"])
    paths = root / "ca.pem", root / "bmc.pem", root / "bmc.key"
    for path, data in zip(paths, (pki._cert_pem(ca.cert), pki._cert_pem(server.cert),
                                  pki._key_pem(server.key)), strict=True):  # fmt: skip
        path.write_bytes(data)
    return paths


@contextmanager
def redfish_bmc(root: Path, power_state: str = "On") -> Iterator[Bmc]:
    """sushy-emulator serving one system in ``power_state``; stopped afterwards."""
    ca, cert, key = _certificates(root)
    auth = root / "htpasswd"
    auth.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    state = root / "state"
    state.mkdir()
    config = root / "emulator.conf"
    config.write_text(
        f"SUSHY_EMULATOR_AUTH_FILE = {str(auth)!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(state)!r}\n"
        "SUSHY_EMULATOR_FAKE_SYSTEMS = [{'uuid': " + repr(SYSTEM_UUID) + ", 'name': 'host1', "
        f"'power_state': {power_state!r}, 'external_notifier': False, 'nics': []}}]\n"
    )
    port = _free_port()
    log = (root / "emulator.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sushy_tools.emulator.main", "--config", str(config), "--fake",
         "-i", "127.0.0.1", "-p", str(port), "--ssl-certificate", str(cert), "--ssl-key",
         str(key)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    said = (root / "emulator.log").read_text()[-2000:]
                    raise RuntimeError(f"sushy-emulator did not start: {said}") from None
                time.sleep(0.2)
        yield Bmc(f"https://127.0.0.1:{port}/redfish/v1/Systems/{SYSTEM_UUID}", ca, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
