"""`vmferry server` and two `vmferry worker` processes on a real PostgreSQL, moving a real lab
guest: two operators start the same move at once (one job, one 409), the worker running it is
killed with SIGKILL mid-migration, the other worker reconciles the job once the dead one's
lease expires, the VM runs exactly once, and the audit trail shows every step. Then the
surviving worker moves the guest back with a pre-migrate executable hook and a required,
signed post-migrate webhook around the move."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from vmferry.lab.state import LabState
from vmferry.store.db import open_store

pytestmark = [pytest.mark.lab, pytest.mark.live_moves]

GUEST = "wkg"
LEASE_S = 6  # jobs.owner_lease_s: a killed worker's job is orphaned 6 s after its last renewal
SECRET_ENV, SECRET = "VMFERRY_HOOK_SECRET_LAB", "lab-hook-secret"


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "vmferry.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def process(env: dict[str, str], *args: str, log: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A vmferry process (its stderr kept in ``log`` by a thread), stopped with SIGTERM at
    the end (SIGKILL after 30 s) unless it is gone already."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmferry.cli.main", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stream = proc.stderr
    reader = threading.Thread(target=lambda: log.extend(stream), daemon=True)
    reader.start()
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        reader.join(5)


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, logs: list[str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout_s:g} s; processes said:\n{''.join(logs)[-4000:]}")


def running_on(lab_uris: dict[str, str], name: str) -> list[str]:
    """The hosts where domain ``name`` runs (or is paused)."""
    found = []
    for host, uri in lab_uris.items():
        conn = libvirt.open(uri)
        try:
            dom = conn.lookupByName(name)
            state, _reason = dom.state(0)
            if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED):
                found.append(host)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        finally:
            conn.close()
    return found


def test_a_killed_workers_move_is_reconciled_by_another_which_runs_hooks(
    lab: LabState, lab_guests: Callable[..., Any], pg_url: str, tmp_path: Path
) -> None:
    lab_guests(GUEST, "kvm1", memory_mb=256, working_set_mb=64)
    hosts = open_store().list_hosts()  # the lab registered them in the module's store
    uris = {h.name: h.uri for h in hosts}
    env = {**os.environ, "VMFERRY_DB": pg_url, SECRET_ENV: SECRET}
    with open_store(pg_url) as store:
        for host in hosts:
            store.add_host(host)
    cli(env, "settings", "set", "jobs.owner_lease_s", str(LEASE_S))
    tokens = {
        name: cli(env, "users", "add", name, "--role", "operator").strip()
        for name in ("op1", "op2")
    }
    port, logs = free_port(), []  # type: ignore[var-annotated]
    url = f"http://127.0.0.1:{port}/api/v1"
    with (
        process(env, "server", "--listen", f"127.0.0.1:{port}", "--log-level", "warning", log=logs),
        process(env, "worker", "--name", "wA", "--concurrency", "1", log=logs) as worker_a,
        process(env, "worker", "--name", "wB", "--concurrency", "1", log=logs) as worker_b,
        httpx.Client(timeout=60) as http,
    ):
        wait_for("the server answers", lambda: _answers(http, url), 60, logs)
        wait_for(
            "both workers start",
            lambda: sum("vmferry worker w" in line for line in logs) == 2,
            60,
            logs,
        )

        # two operators start the same move at once: the database lets one job exist
        body = {"vm": GUEST, "to": "kvm2", "bandwidth_mib_s": 6}  # ~40 s: time to kill it
        answers: dict[str, httpx.Response] = {}
        barrier = threading.Barrier(2)

        def start(who: str) -> None:
            barrier.wait()
            answers[who] = http.post(
                f"{url}/migrations", json=body, headers={"Authorization": f"Bearer {tokens[who]}"}
            )

        starters = [threading.Thread(target=start, args=(who,)) for who in tokens]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join(60)
        codes = sorted(a.status_code for a in answers.values())
        assert codes == [202, 409], {w: (a.status_code, a.text) for w, a in answers.items()}
        winner = next(w for w, a in answers.items() if a.status_code == 202)
        job_id = answers[winner].json()["id"]
        loser = next(w for w in answers if w != winner)
        assert "unfinished job already" in answers[loser].json()["detail"]

        def job() -> dict[str, Any]:
            doc: dict[str, Any] = http.get(
                f"{url}/jobs/{job_id}", headers={"Authorization": f"Bearer {tokens[winner]}"}
            ).json()
            return doc

        def moving() -> str | None:
            doc = job()
            taken = [e["data"]["worker"] for e in doc["events"] if e["kind"] == "worker"]
            started = [
                e
                for e in doc["events"]
                if e["kind"] == "status" and e["message"].startswith("migrating ")
            ]
            return taken[0] if doc["status"] == "running" and taken and started else None

        taker = wait_for("a worker moves the guest", moving, 90, logs)
        time.sleep(3)  # well into the copy (6 MiB/s: 256 MiB take about 40 s)
        assert job()["status"] == "running"
        victim, survivor = (worker_a, "wB") if taker == "wA" else (worker_b, "wA")
        victim.kill()  # SIGKILL: no clean-up, its lease just stops being renewed
        victim.wait(10)
        killed_at = time.monotonic()

        ended = wait_for(
            "the other worker reconciles the job",
            lambda: (doc := job())["status"] in ("completed", "failed", "cancelled") and doc,
            LEASE_S + 150,
            logs,
        )
        waited = time.monotonic() - killed_at
        print(f"job {job_id}: {ended['status']} {waited:.1f} s after the kill: {ended['reason']}")
        where = running_on(uris, GUEST)
        assert len(where) == 1, f"{GUEST} runs on {where}"  # exactly once
        if ended["status"] == "completed":
            assert where == ["kvm2"]
        else:
            assert where == ["kvm1"]
        assert ended["reason"].startswith("vmferry was interrupted"), ended["reason"]
        assert waited >= LEASE_S / 3, "reconciled before the dead worker's lease could expire"

        trail = http.get(
            f"{url}/audit",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {tokens[winner]}"},
        )
        assert trail.status_code == 200, trail.text
        rows = [(e["user"], e["action"], e["target"], e["result"]) for e in trail.json()]
        job_rows = [(user, action) for user, action, target, _ in rows if target == job_id]
        assert job_rows[0][1] == "job.pending" and job_rows[0][0].startswith("server:")
        assert ("worker:" + taker, "job.running") in job_rows
        assert job_rows[-1] == ("worker:" + survivor, f"job.{ended['status']}")
        requests = [
            (user, action, result) for user, action, _t, result in rows if action == "migrate"
        ]
        assert sorted(requests) == sorted(
            [(winner, "migrate", "ok"), (loser, "migrate", "rejected")]
        )

        # the dead worker's task is failed, never run again
        with open_store(pg_url) as store, store.engine.connect() as connection:
            from sqlalchemy import text

            def task_status() -> str | None:
                value = connection.execute(
                    text(
                        "SELECT status FROM procrastinate_jobs WHERE task_name = 'vmferry.run_move'"
                    )
                ).scalar_one()
                connection.commit()
                return None if value == "doing" else str(value)

            assert wait_for("the dead worker's task is failed", task_status, 90, logs) == "failed"

        # the surviving worker moves it back, with a pre-migrate executable and a required
        # post-migrate webhook (signed) around the move
        back = "kvm1" if where == ["kvm2"] else "kvm2"
        with hook_receiver() as (hook_url, received):
            script = tmp_path / "pre-hook.sh"
            seen = tmp_path / "pre-hook.json"
            script.write_text(f"#!/bin/sh\ncat > {seen}\necho drained\n")
            script.chmod(0o755)
            cli(
                env, "hooks", "add", GUEST, "drain", "--phase", "pre-migrate", "--exec", str(script)
            )
            cli(
                env,
                "hooks",
                "add",
                GUEST,
                "smoke",
                "--phase",
                "post-migrate",
                "--url",
                hook_url,
                "--secret-env",
                SECRET_ENV,
                "--required",
            )
            moved = http.post(
                f"{url}/migrations",
                json={"vm": GUEST, "to": back},
                headers={"Authorization": f"Bearer {tokens[winner]}"},
            )
            assert moved.status_code == 202, moved.text
            job_id = moved.json()["id"]
            done = wait_for(
                "the move back",
                lambda: (doc := job())["status"] in ("completed", "failed", "cancelled") and doc,
                180,
                logs,
            )
            assert done["status"] == "completed", done["reason"]
            assert running_on(uris, GUEST) == [back]
            pre = json.loads(seen.read_text())
            assert pre["id"] == job_id and pre["vm"] == GUEST
            assert len(received) == 1
            headers, body = received[0]
            signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["x-vmferry-signature"] == f"sha256={signature}"
            assert headers["x-vmferry-event"] == "post-migrate"
            assert json.loads(body)["id"] == job_id
            hooks = [
                (e["data"]["hook"], e["data"]["result"])
                for e in done["events"]
                if e["kind"] == "hook"
            ]
            assert hooks == [("drain", "ok"), ("smoke", "ok")]
            assert [e["data"]["worker"] for e in done["events"] if e["kind"] == "worker"] == [
                survivor
            ]


@contextmanager
def hook_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A webhook receiver on loopback: its URL and what it was sent (headers, body)."""
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/smoke", received
    finally:
        server.shutdown()
        thread.join(5)


def _answers(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(f"{url}/hosts").status_code == 401  # up (and asking for a token)
    except httpx.TransportError:
        return False
