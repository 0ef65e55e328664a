"""An ARP probe on one interface: does anyone on this L2 segment answer for an address?

Run inside the host's network namespace: ``python -m vmferry.drivers.l2probe IFACE ADDR``.
It sends an ARP request with sender address 0.0.0.0 (an RFC 5227 probe, which changes no
neighbour's ARP cache) and prints one JSON line: ``{"reached": bool, "mac": str|null}``.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806


def probe(iface: str, addr: str, timeout_s: float = 1.5, tries: int = 3) -> str | None:
    """The MAC that answered for ``addr`` on ``iface``'s segment, or None."""
    target = socket.inet_aton(addr)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((iface, ETH_P_ARP))
        own = sock.getsockname()[4][:6]
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, own, b"\0" * 4, b"\0" * 6, target)
        frame = b"\xff" * 6 + own + struct.pack("!H", ETH_P_ARP) + arp
        deadline = time.monotonic() + timeout_s
        next_send = 0.0
        sent = 0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if sent < tries and now >= next_send:
                sock.send(frame)
                sent += 1
                next_send = now + timeout_s / tries
            sock.settimeout(max(0.01, min(next_send, deadline) - now))
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            if len(data) < 42 or data[12:14] != b"\x08\x06":
                continue
            op = struct.unpack("!H", data[20:22])[0]
            if op == 2 and data[28:32] == target:
                return ":".join(f"{b:02x}" for b in data[22:28])
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        sys.stderr.write("usage: python -m vmferry.drivers.l2probe IFACE ADDR [TIMEOUT_S]\n")
        return 2
    try:
        mac = probe(args[0], args[1], float(args[2]) if len(args) == 3 else 1.5)
        result: dict[str, object] = {"reached": mac is not None, "mac": mac}
    except OSError as exc:
        result = {"reached": False, "mac": None, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
