"""Try service probes over and over; one JSON line per try on stdout.

Run as ``python -m vmferry.drivers.probe_loop [--interval S] [--timeout S] SPEC...`` (prefixed
with ``ip netns exec NAME`` to probe from a network namespace). Each probe has its own thread,
so a slow one never delays another. Each line is ``{"i": INDEX, "at": MONOTONIC, "ok": BOOL}``;
``at`` is when the answer came (or the try gave up), on the system-wide monotonic clock the
parent reads too. The loop ends when its stdin closes (the parent is gone or done).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from vmferry.model.probe import ProbeKind, ProbeSpec, ProbeSpecError, parse_probe


def try_probe(spec: ProbeSpec, timeout_s: float) -> bool:
    """One try: did the service answer as the spec says?"""
    try:
        if spec.kind is ProbeKind.TCP:
            assert spec.port is not None
            with socket.create_connection((spec.host, spec.port), timeout=timeout_s):
                return True
        if spec.kind is ProbeKind.HTTP:
            return _http(spec, timeout_s)
        wait = str(max(1, round(timeout_s)))
        done = subprocess.run(["ping", "-n", "-q", "-c", "1", "-W", wait, spec.host],
                              capture_output=True, timeout=timeout_s + 2, check=False)  # fmt: skip
        return done.returncode == 0
    except (OSError, http.client.HTTPException, subprocess.TimeoutExpired):
        return False


def _http(spec: ProbeSpec, timeout_s: float) -> bool:
    assert spec.url is not None
    secure = spec.url.startswith("https://")
    connection: http.client.HTTPConnection
    if secure:  # a liveness probe, not a certificate check: the service answering is the test
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection(spec.host, spec.port, timeout=timeout_s,
                                                 context=context)  # fmt: skip
    else:
        connection = http.client.HTTPConnection(spec.host, spec.port, timeout=timeout_s)
    try:
        rest = spec.url.split("//", 1)[1]
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        connection.request("GET", path, headers={"User-Agent": "vmferry-probe"})
        response = connection.getresponse()
        response.read()
        return response.status == spec.expect_status
    finally:
        connection.close()


def _loop(index: int, spec: ProbeSpec, interval_s: float, timeout_s: float,
          out: threading.Lock, stop: threading.Event) -> None:  # fmt: skip
    next_at = time.monotonic()
    while True:
        ok = try_probe(spec, timeout_s)
        line = json.dumps({"i": index, "at": time.monotonic(), "ok": ok})
        with out:
            try:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                stop.set()
                return
        next_at = max(next_at + interval_s, time.monotonic())
        if stop.wait(next_at - time.monotonic()):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe_loop")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--once", action="store_true", help="try each probe once, then end")
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args(argv)
    try:
        specs = [parse_probe(text) for text in args.specs]
    except ProbeSpecError as exc:
        print(f"probe_loop: {exc}", file=sys.stderr)
        return 2
    out, stop = threading.Lock(), threading.Event()
    if args.once:
        stop.set()  # each loop makes its one try, then sees stop
        args.interval = 0.0
    threads = [
        threading.Thread(target=_loop, args=(i, s, args.interval, args.timeout, out, stop))
        for i, s in enumerate(specs)
    ]
    for thread in threads:
        thread.daemon = not args.once
        thread.start()
    if args.once:
        for thread in threads:
            thread.join()
        return 0
    sys.stdin.read()  # until the parent closes it or goes away
    stop.set()
    return 0


def loop_command(specs: Sequence[str], netns: str | None, *extra: str) -> list[str]:
    """The command that runs this loop over ``specs`` (in network namespace ``netns``)."""
    loop = [sys.executable, "-m", "vmferry.drivers.probe_loop", *extra, "--", *specs]
    return ["ip", "netns", "exec", netns, *loop] if netns else loop


def try_once(specs: Sequence[str], netns: str | None, timeout_s: float = 1.0) -> list[bool]:
    """Try each probe once (from ``netns``); per probe, whether it answered."""
    command = loop_command(specs, netns, "--once", "--timeout", str(timeout_s))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s + 10,
                              check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return [False] * len(specs)
    answered = [False] * len(specs)
    for line in done.stdout.splitlines():
        try:
            doc = json.loads(line)
            answered[int(doc["i"])] = bool(doc["ok"])
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return answered


if __name__ == "__main__":
    sys.exit(main())
