"""Reach lab guests from the client namespace, as a user of their services would."""

from __future__ import annotations

import json
import sys
from typing import Any

from vmferry.drivers.process import run_tool
from vmferry.errors import LabError
from vmferry.lab import topology as topo


def _probe(*args: str, timeout_s: float = 30) -> dict[str, Any]:
    argv = ["ip", "netns", "exec", topo.CLIENT_NS, sys.executable, "-m", "vmferry.lab.probe"]
    done = run_tool([*argv, *args], timeout_s=timeout_s, check=False)
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise LabError(f"client probe failed: {done.stderr.strip() or 'no output'}") from exc
    return result


def echo(addr: str, count: int = 1) -> list[float]:
    """RTTs (ms) of ``count`` round trips to the guest's echo service; LabError if it fails."""
    result = _probe("echo", addr, "--count", str(count))
    if not result["ok"]:
        raise LabError(f"echo probe to {addr} failed: {result['error']}")
    return [float(x) for x in result["rtt_ms"]]


def transfer_rate(addr: str, nbytes: int, *, to_vm: bool) -> float:
    """Bytes/s of a bounded transfer of ``nbytes`` to the VM (its sink, port 9) or from it
    (its source, port 19), timed from the client namespace."""
    result = _probe("send" if to_vm else "receive", addr, "--bytes", str(nbytes), timeout_s=180)
    if not result["ok"]:
        raise LabError(f"bounded transfer with {addr} failed: {result}")
    return float(result["bytes_s"])


def port_open(addr: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether the client can open a TCP connection to ``addr:port`` within ``timeout_s``."""
    result = _probe("connect", addr, str(port), "--timeout", str(timeout_s))
    return bool(result["open"])


def control(addr: str, command: str) -> str:
    """Send a guestd control command (``rate 36``, ``status``) and return the reply."""
    result = _probe("control", addr, command)
    if not result["ok"]:
        raise LabError(f"guest control at {addr} failed: {result['error']}")
    return str(result["reply"])
