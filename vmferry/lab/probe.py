"""Probes run inside the lab's client namespace: `python -m vmferry.lab.probe ...`.

They are a separate process because a network namespace is entered per process (Python 3.11
has no os.setns); `vmferry.lab.client` starts them with `ip netns exec vmf-client`.
Each prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

ECHO_PORT = 7
CONTROL_PORT = 7001


def echo_once(addr: str, port: int = ECHO_PORT, timeout_s: float = 2.0) -> float:
    """Round-trip one message through the guest's echo service; return the RTT in ms."""
    payload = f"vmferry-probe {time.time_ns()}\n".encode()
    start = time.monotonic()
    with socket.create_connection((addr, port), timeout=timeout_s) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(len(payload) - len(got))
            if not chunk:
                raise ConnectionError("echo service closed the connection early")
            got += chunk
    if got != payload:
        raise ConnectionError("echo service returned different bytes")
    return (time.monotonic() - start) * 1000


def control(addr: str, command: str, port: int = CONTROL_PORT, timeout_s: float = 2.0) -> str:
    """Send one command line to guestd's control port and return its one-line reply."""
    with socket.create_connection((addr, port), timeout=timeout_s) as sock:
        sock.sendall(command.strip().encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode(errors="replace").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmferry.lab.probe")
    sub = parser.add_subparsers(dest="what", required=True)
    echo = sub.add_parser("echo")
    echo.add_argument("addr")
    echo.add_argument("--count", type=int, default=1)
    echo.add_argument("--timeout", type=float, default=2.0)
    ctl = sub.add_parser("control")
    ctl.add_argument("addr")
    ctl.add_argument("command")
    args = parser.parse_args(argv)
    try:
        if args.what == "echo":
            rtts = [echo_once(args.addr, timeout_s=args.timeout) for _ in range(args.count)]
            result: dict[str, object] = {"ok": True, "rtt_ms": rtts}
        else:
            result = {"ok": True, "reply": control(args.addr, args.command)}
    except OSError as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
