"""The real `vmferry server` process on a free loopback port, with a token from a real
`vmferry users add`, talked to with httpx, then stopped. Its inventory is libvirt's own
test driver (test:///default), read for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.line_reader import vmferry_server


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "VMFERRY_DB": f"sqlite:///{tmp_path / 'server.db'}"}


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    with vmferry_server(env) as served:
        yield served.url, list(served.reader.seen)
    rest = served.reader.rest()
    # uvicorn shuts down cleanly, then ends by the signal it got (as a service should)
    assert "Finished server process" in rest
    assert served.process.returncode == -signal.SIGTERM


def test_the_real_server_answers_with_a_real_token_and_stops(
    env: dict[str, str], server: tuple[str, list[str]]
) -> None:
    added = cli("users", "add", "ops", "--role", "operator", "--json", env=env)
    assert added.returncode == 0, added.stderr
    token = json.loads(added.stdout)["token"]
    hosted = cli("hosts", "add", "t1", "test:///default", env=env)
    assert hosted.returncode == 0, hosted.stderr
    url, started = server
    assert any("jobs run in this process" in line for line in started)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/api/v1/hosts").status_code == 401
        hosts = client.get("/api/v1/hosts", headers=auth)
        assert hosts.status_code == 200 and [h["name"] for h in hosts.json()] == ["t1"]
        vms = client.get("/api/v1/vms", headers=auth).json()
        assert [(v["name"], v["host"], v["state"]) for v in vms["items"]] == [
            ("test", "t1", "running"),
        ]  # fmt: skip
        tagged = client.put("/api/v1/vms/test/tags", headers=auth, json={"tags": ["project:a"]})
        assert tagged.status_code == 200 and tagged.json()["tags"] == ["project:a"]
        assert client.get("/openapi.json").json()["info"]["title"] == "vmferry"
    trail = cli("audit", "--json", env=env)
    rows = [(e["user"], e["remote"], e["action"], e["target"], e["result"])
            for e in json.loads(trail.stdout)]  # fmt: skip
    assert rows[-1] == ("ops", "127.0.0.1", "vms.tag", "test", "ok")


@pytest.mark.parametrize("listen", ["8470", "localhost", "127.0.0.1:", "127.0.0.1:65536", ":80"])
def test_a_bad_listen_address_is_one_line_exit_2(env: dict[str, str], listen: str) -> None:
    done = cli("server", "--listen", listen, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"vmferry: --listen {listen!r}: give HOST:PORT, e.g. 127.0.0.1:8470"
    ]


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [("127.0.0.1:8470", ("127.0.0.1", 8470)), ("[::1]:9000", ("::1", 9000)),
     ("0.0.0.0:1", ("0.0.0.0", 1)), ("127.0.0.1:0", ("127.0.0.1", 0))],
)  # fmt: skip
def test_listen_addresses(listen: str, parsed: tuple[str, int]) -> None:
    from vmferry.cli.server_cmd import parse_listen

    assert parse_listen(listen) == parsed
