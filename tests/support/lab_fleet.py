"""The fleet lab tests' helpers: vmferry run as a user runs it, the lab's power driver set
on a host, a guest answering, and where a guest runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from vmferry.errors import LabError
from vmferry.lab import client

LAB_HOSTS = ("kvm1", "kvm2", "kvm3")


def vmferry(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=os.environ,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def lab_power(host: str) -> list[str]:
    """`vmferry host power set HOST` with the lab's power commands (a BMC outside the host)."""
    lab = f"{sys.executable} -m vmferry.cli.main lab host power {host}"
    return ["host", "power", "set", host, "--on", f"{lab} on", "--off", f"{lab} off",
            "--status", f"{lab} status"]  # fmt: skip


def answers(address: str, within_s: float) -> None:
    """The guest's echo service answers within ``within_s`` (it booted and its network is
    up); fails the test otherwise."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            client.echo(address, count=1)
            return
        except LabError:
            assert time.monotonic() < deadline, f"{address} did not answer in {within_s:g} s"
            time.sleep(1.0)


def runs_on(name: str) -> list[str]:
    """The lab hosts where ``name`` runs, among those that answer (a host the lab does not
    have, or one powered off, does not)."""
    listed = vmferry("inventory", "--json")  # one run: a host that does not answer is
    # left out of the list (and sets the exit code), the others are listed
    assert listed.stdout, listed.stderr
    return sorted(r["host"] for r in json.loads(listed.stdout)
                  if r["host"] in LAB_HOSTS and r["spec"]["name"] == name
                  and r["state"] == "running")  # fmt: skip
