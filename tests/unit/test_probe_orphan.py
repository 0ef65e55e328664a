"""A witness's echo probe ends when the vmferry that started it is killed, instead of
sending to the next guest that gets the same address for the rest of its 10 minutes."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_watch_probe_ends_when_its_parent_is_killed(echo_port: int) -> None:
    starter = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-m', 'vmferry.lab.probe', 'watch', '127.0.0.1',"
        f" '--port', '{echo_port}', '--duration-s', '60'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    probe = int(parent.stdout.readline())
    time.sleep(1.0)  # it is connected and echoing
    assert _alive(probe)
    with socket.create_connection(("127.0.0.1", echo_port), timeout=2):
        pass  # the server still answers: the probe is not ending for want of a peer
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(probe) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(probe), "the probe outlived the process that started it"


class FallsSilent(socketserver.BaseRequestHandler):
    """Echoes the first 10 lines, then reads and answers nothing: a guest gone away."""

    def handle(self) -> None:
        answered = 0
        while answered < 10 and (data := self.request.recv(4096)):
            self.request.sendall(data)
            answered += data.count(b"\n")
        while self.request.recv(4096):
            pass


def test_a_blackout_still_open_when_the_watch_stops_counts() -> None:
    from vmferry.lab.probe import watch

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), FallsSilent)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = watch("127.0.0.1", 0.01, 1.5, port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    # about 0.1 s of answers, then silence until the watch ended at 1.5 s
    assert isinstance(result["max_gap_ms"], int) and result["max_gap_ms"] >= 1000, result
