"""VMware's vSphere simulator for the vSphere tests: tests/support/vcsim/main.go, built by
`make install` (`make vcsim`) into .cache/vcsim/vcsim.

:func:`running_vcsim` starts it on a free loopback port (port 0: the simulator binds it
and prints its URL), over HTTPS with a fresh self-signed certificate written to the test's
directory, and stops exactly that process when the block ends. A missing binary fails the
test, naming `make install`: nothing is skipped silently. :func:`control`,
:func:`write_disk` and :func:`set_perf` use the harness's test switches (a guest's writes
into a disk, which its QueryChangedDiskAreas then reports; a VM's performance statistics,
which its QueryPerf then gives: the header of main.go describes them).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from support.line_reader import LineReader

VCSIM_BINARY = Path(__file__).resolve().parents[2] / ".cache" / "vcsim" / "vcsim"
USER = "vmferry"
PASSWORD = "vcsim-secret-7"
START_LIMIT_S = 30


@dataclass(frozen=True)
class Vcsim:
    """A running simulator: its SDK URL (``https://127.0.0.1:PORT/sdk``), the only user
    and password it accepts, its certificate (PEM), the CA to trust for it, and its
    stderr (the SOAP traffic, when traced)."""

    url: str
    user: str
    password: str
    ca_file: Path
    log_file: Path

    def requests_since(self, offset: int) -> list[str]:
        """The SOAP methods called after the log's first ``offset`` bytes, in order
        (needs ``trace``)."""
        with self.log_file.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        bodies = re.findall(r"<soapenv:Body><(\w+)\s", text)  # requests and responses
        return [name for name in bodies if not name.endswith("Response")]

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 443

    def vsphere_url(self) -> str:
        """The `vmferry sources add` form: ``vsphere://USER@HOST:PORT``."""
        return f"vsphere://{self.user}@{self.host}:{self.port}"


@contextmanager
def running_vcsim(
    workdir: Path,
    *,
    trace: bool = False,
    tools_running: tuple[str, ...] = (),
    guest_net: tuple[str, ...] = (),
) -> Iterator[Vcsim]:
    """A simulator (vCenter model: one datacenter DC0, a standalone host and a cluster of
    three, four VMs) whose files are in ``workdir``, tracing its SOAP traffic to its log
    when ``trace``, VMware Tools running in the VMs ``tools_running`` names and reporting
    the network ``guest_net`` gives (``NAME=IP/PREFIX,GATEWAY,DNS`` each); SIGTERM when
    the block ends, killed if it has not exited 10 s later."""
    if not VCSIM_BINARY.is_file():
        pytest.fail(f"the vSphere simulator {VCSIM_BINARY} is not built: `make install` "
                    "(or `make vcsim`) builds it")  # fmt: skip
    ca_file, log_file = workdir / "vcsim-ca.pem", workdir / "vcsim.log"
    command = [str(VCSIM_BINARY), "-cert", str(ca_file), "-user", USER, "-password", PASSWORD,
               "-tools-running", ",".join(tools_running),
               "-guest-net", ";".join(guest_net)]  # fmt: skip
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [*command, *(["-trace"] if trace else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    assert process.stdout is not None
    reader = LineReader(process.stdout)
    try:
        line = reader.until(r"^\{.*\}$", limit_s=START_LIMIT_S)
        if line is None:
            log_text = log_file.read_text()
            pytest.fail(f"the vSphere simulator did not start within {START_LIMIT_S} s: "
                        f"{''.join(reader.seen)}{log_text}")  # fmt: skip
        started = json.loads(line.group(0))
        yield Vcsim(started["url"], USER, PASSWORD, Path(started["ca"]), log_file)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def control(sim: Vcsim, action: str, **query: int) -> dict[str, object]:
    """The test switches of tests/support/vcsim/main.go: ``stats``, ``reset``, ``fault``
    (``cut_after``, ``count``, ``delay_ms``); its answer (gets, max_concurrent, ranges,
    cuts_served)."""
    found: dict[str, object] = json.loads(_switch(sim, action, query))
    return found


def write_disk(sim: Vcsim, disk: str, offset: int, data: bytes) -> int:
    """A guest's write, for changed block tracking: ``data`` written at byte ``offset`` of
    the raw extent (``NAME-flat.vmdk``) of the monolithicFlat descriptor ``disk``
    (``[LocalDS_0] VM/NAME.vmdk``) and logged by the harness; the write's sequence number.
    An HTTP error (404: no such disk, 400: past its end) raises urllib.error.HTTPError."""
    answer = json.loads(_switch(sim, "write", {"disk": disk, "offset": offset}, data))
    seq: int = answer["seq"]
    return seq


def set_perf(sim: Vcsim, vm: str, counters: dict[str, list[int]], interval_s: int = 20) -> None:
    """The performance statistics of the VM named ``vm``: ``counters`` maps counter names
    (``<group>.<name>.<rollup>`` of perfManager.perfCounter, ``cpu.usage.average``) to their
    values, oldest first, all as many, ``interval_s`` apart; QueryPerf then gives exactly
    those, the newest stamped now. Replaces what was set for ``vm``. A refusal (400: a bad
    body or counter name, 404: no such VM) raises AssertionError with the harness's answer."""
    import urllib.error

    body = json.dumps({"interval_s": interval_s, "counters": counters}).encode()
    try:
        answer = json.loads(_switch(sim, "perf", {"vm": vm}, body))
    except urllib.error.HTTPError as refused:
        text = refused.read().decode(errors="replace").strip()
        raise AssertionError(f"/vcsim-test/perf?vm={vm}: HTTP {refused.code}: {text}") from None
    samples = len(next(iter(counters.values()), []))
    assert answer == {"vm": vm, "samples": samples}, answer


def _switch(
    sim: Vcsim, action: str, query: Mapping[str, object], data: bytes | None = None
) -> bytes:
    """The answer of /vcsim-test/``action`` (POST when there is ``data``)."""
    import ssl
    import urllib.request
    from urllib.parse import urlencode

    context = ssl.create_default_context(cafile=str(sim.ca_file))
    url = f"https://{sim.host}:{sim.port}/vcsim-test/{action}?{urlencode(query)}"
    with urllib.request.urlopen(url, data=data, context=context, timeout=10) as answer:
        body: bytes = answer.read()
    return body


def vsphere_cli(db: Path, *args: str, password: str | None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``vmferry ARGS`` with the store ``db``, the password in VMFERRY_VSPHERE_PASSWORD
    (None: unset) and no terminal (a prompt would fail, never hang)."""
    import os
    import sys

    env = {**os.environ, "VMFERRY_DB": f"sqlite:///{db}"}
    env.pop("VMFERRY_VSPHERE_PASSWORD", None)
    if password is not None:
        env["VMFERRY_VSPHERE_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def store_with_source(sim: Vcsim, path: Path) -> Path:
    """A store at ``path`` with ``sim`` as source vc1 and libvirt's test driver as host t1."""
    added = vsphere_cli(path, "sources", "add", "vc1", sim.vsphere_url(), "--ca",
                        str(sim.ca_file), password=sim.password)  # fmt: skip
    assert added.returncode == 0, added.stderr
    host = vsphere_cli(path, "hosts", "add", "t1", "test:///default", password=None)
    assert host.returncode == 0, host.stderr
    return path
