"""Probes run inside the lab's client namespace: `python -m vmferry.lab.probe ...`.

They are a separate process because a network namespace is entered per process (Python 3.11
has no os.setns); `vmferry.lab.client` starts them with `ip netns exec vmf-client`.
Each prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import select
import signal
import socket
import sys
import time

ECHO_PORT = 7
CONTROL_PORT = 7001
SINK_PORT = 9
SOURCE_PORT = 19


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


def send_bounded(addr: str, nbytes: int, timeout_s: float = 120.0) -> dict[str, object]:
    """Send ``nbytes`` to the guest's sink (port 9) and wait for its count: the rate to the VM."""
    chunk = b"x" * 65536
    with socket.create_connection((addr, SINK_PORT), timeout=timeout_s) as sock:
        start = time.monotonic()
        left = nbytes
        while left > 0:
            left -= sock.send(chunk[: min(left, len(chunk))])
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            got = sock.recv(128)
            if not got:
                break
            reply += got
        took = time.monotonic() - start
    counted = int(reply.split()[1]) if reply.startswith(b"ok ") else -1
    return {
        "ok": counted == nbytes,
        "bytes": counted,
        "seconds": round(took, 4),
        "bytes_s": round(nbytes / took),
    }


def receive_bounded(addr: str, nbytes: int, timeout_s: float = 120.0) -> dict[str, object]:
    """Ask the guest's source (port 19) for ``nbytes``: the rate from the VM."""
    with socket.create_connection((addr, SOURCE_PORT), timeout=timeout_s) as sock:
        sock.sendall(f"{nbytes}\n".encode())
        got = 0
        start = first = time.monotonic()
        while True:
            data = sock.recv(262144)
            if not data:
                break
            if got == 0:
                first = time.monotonic()
            got += len(data)
        took = time.monotonic() - start
    return {
        "ok": got == nbytes,
        "bytes": got,
        "seconds": round(took, 4),
        "first_byte_s": round(first - start, 4),
        "bytes_s": round(got / took) if took else 0,
    }


def can_connect(addr: str, port: int, timeout_s: float) -> dict[str, object]:
    """Whether a TCP connection to ``addr:port`` is accepted within ``timeout_s``."""
    try:
        with socket.create_connection((addr, port), timeout=timeout_s):
            return {"ok": True, "open": True, "detail": "connected"}
    except OSError as exc:
        return {"ok": True, "open": False, "detail": f"{type(exc).__name__}: {exc}"}


def watch(
    addr: str, interval_s: float, duration_s: float, port: int = ECHO_PORT
) -> dict[str, object]:
    """Keep one TCP connection to the echo service and send a line every ``interval_s``.

    Runs until SIGTERM, ``duration_s``, or the process that started it is gone (a vmferry
    killed mid-move must not leave a probe hammering the next guest at that address);
    returns the largest gap between consecutive replies (host clock, monotonic), and
    whether the connection ever broke.
    """
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    deadline = time.monotonic() + duration_s
    parent = os.getppid()
    sock: socket.socket | None = None
    replies: list[float] = []
    errors: list[str] = []
    connects = 0
    buffer = b""
    next_send = time.monotonic()
    seq = 0
    while not stop["now"] and time.monotonic() < deadline and os.getppid() == parent:
        now = time.monotonic()
        if sock is None:
            try:
                sock = socket.create_connection((addr, port), timeout=0.5)
                sock.setblocking(False)
                connects += 1
            except OSError as exc:
                errors.append(f"{now:.3f} connect: {exc}")
                time.sleep(interval_s)
                continue
        try:
            if now >= next_send:
                seq += 1
                sock.send(f"{seq}\n".encode())
                next_send = now + interval_s
            readable, _, _ = select.select([sock], [], [], max(0.0, next_send - now))
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the echo service closed the connection")
                buffer += chunk
                arrived = time.monotonic()
                while b"\n" in buffer:
                    _, buffer = buffer.split(b"\n", 1)
                    replies.append(arrived)
        except OSError as exc:
            errors.append(f"{time.monotonic():.3f} {type(exc).__name__}: {exc}")
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    # a gap still open when the watch stops counts too: stopped inside a blackout, the
    # largest gap between two replies would leave that blackout out (docs/performance.md)
    gaps = [b - a for a, b in itertools.pairwise([*replies, time.monotonic()])]
    return {
        "ok": True,
        "replies": len(replies),
        "first": replies[0] if replies else None,
        "last": replies[-1] if replies else None,
        "max_gap_ms": round(max(gaps) * 1000) if gaps else None,
        "connects": connects,
        "connection_kept": connects == 1 and not errors,
        "errors": errors[:20],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmferry.lab.probe")
    sub = parser.add_subparsers(dest="what", required=True)
    echo = sub.add_parser("echo")
    echo.add_argument("addr")
    echo.add_argument("--count", type=int, default=1)
    echo.add_argument("--timeout", type=float, default=2.0)
    mon = sub.add_parser("watch")
    mon.add_argument("addr")
    mon.add_argument("--interval-ms", type=float, default=10.0)
    mon.add_argument("--duration-s", type=float, default=600.0)
    mon.add_argument("--port", type=int, default=ECHO_PORT)
    ctl = sub.add_parser("control")
    ctl.add_argument("addr")
    ctl.add_argument("command")
    for name in ("send", "receive"):
        xfer = sub.add_parser(name)
        xfer.add_argument("addr")
        xfer.add_argument("--bytes", type=int, required=True)
    conn = sub.add_parser("connect")
    conn.add_argument("addr")
    conn.add_argument("port", type=int)
    conn.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    result: dict[str, object]
    try:
        if args.what == "send":
            result = send_bounded(args.addr, args.bytes)
        elif args.what == "receive":
            result = receive_bounded(args.addr, args.bytes)
        elif args.what == "connect":
            result = can_connect(args.addr, args.port, args.timeout)
        elif args.what == "watch":
            result = watch(args.addr, args.interval_ms / 1000, args.duration_s, args.port)
        elif args.what == "echo":
            rtts = [echo_once(args.addr, timeout_s=args.timeout) for _ in range(args.count)]
            result = {"ok": True, "rtt_ms": rtts}
        else:
            result = {"ok": True, "reply": control(args.addr, args.command)}
    except OSError as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
