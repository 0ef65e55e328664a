"""`vmferry server` and two `vmferry worker` processes on a real PostgreSQL, moving a real lab
guest: two operators start the same move at once (one job, one 409), the worker running it is
killed with SIGKILL mid-migration, the other worker reconciles the job once the dead one's
lease expires, the VM runs exactly once, and the audit trail shows every step. Then the
surviving worker moves the guest back with a pre-migrate executable hook and a required,
signed post-migrate webhook around the move (PostgreSQL stopped and started in the
middle), and runs a plan queued through the API.

The command line's remote mode: a guest moves kvm1 -> kvm2 with a local `vmferry migrate
--json`, then back with the same command through a real `vmferry server` process
(VMFERRY_URL, VMFERRY_TOKEN), which runs the move with the real service in its own threads
(the module's store is SQLite). The two results must have the same keys and shape, and agree
on everything but the job, the direction and the measured times. Both share the module's
lab."""

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
from support.line_reader import vmferry_server
from support.pg import PgCluster
from test_migrate_lab import MIGRATE_KEYS

from vmferry.lab.state import GuestRecord, LabState
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
    lab: LabState,
    lab_guests: Callable[..., Any],
    pg_url: str,
    pg_cluster: PgCluster,
    tmp_path: Path,
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
                json={"vm": GUEST, "to": back, "bandwidth_mib_s": 12},
                headers={"Authorization": f"Bearer {tokens[winner]}"},
            )
            assert moved.status_code == 202, moved.text
            job_id = moved.json()["id"]
            # PostgreSQL restarts mid-move: the worker and the server reconnect, the move goes
            # on (libvirt does not need the store) and its record catches up
            wait_for("the move back to run", lambda: job()["status"] == "running", 90, logs)
            pg_cluster.stop()
            try:
                time.sleep(3)
            finally:
                pg_cluster.start()
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

        # a plan through the API: queued on PostgreSQL, run by the surviving worker
        cli(env, "hooks", "remove", GUEST, "drain")
        cli(env, "hooks", "remove", GUEST, "smoke")
        there = "kvm2" if back == "kvm1" else "kvm1"
        plan_yaml = "\n".join([
            "version: 1", "name: api-plan", "defaults: {wave_slice_s: 30}", "hosts:",
            *(f"  - {{name: {h}, cpus: 16, memory_mb: 8192, link_gbps: 0.4, max_concurrent: 1}}"
              for h in ("kvm1", "kvm2")),
            "vms:",
            f"  - {{name: {GUEST}, source: {back}, destination: {there}, memory_mb: 256, "
            "vcpus: 1, max_downtime_ms: 500}",
        ]) + "\n"  # fmt: skip
        auth = {"Authorization": f"Bearer {tokens[winner]}"}
        made = http.post(f"{url}/plans", json={"yaml": plan_yaml}, headers=auth)
        assert made.status_code == 201, made.text
        plan_id = made.json()["id"]
        queued = http.post(f"{url}/plans/{plan_id}/run", headers=auth)
        assert queued.status_code == 202, queued.text
        again = http.post(f"{url}/plans/{plan_id}/run", headers=auth)
        assert again.status_code == 409, again.text  # waiting in the queue, or running

        def plan_end() -> dict[str, Any] | None:
            doc: dict[str, Any] = http.get(f"{url}/plans/{plan_id}", headers=auth).json()
            return doc if doc["status"] in ("completed", "failed", "cancelled") else None

        plan = wait_for("the plan through a worker", plan_end, 240, logs)
        assert plan["status"] == "completed", plan
        assert [(i["vm"], i["status"]) for i in plan["items"]] == [(GUEST, "completed")]
        assert running_on(uris, GUEST) == [there]
        item_job = http.get(f"{url}/jobs/{plan['items'][0]['job_id']}", headers=auth).json()
        assert item_job["status"] == "completed", item_job["reason"]
        assert any(f"plan {plan_id}: taken by vmferry worker {survivor}" in line
                   for line in logs), "".join(logs)[-3000:]  # fmt: skip


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


# -- the command line's remote mode (SQLite: the server runs the move itself) -----------

MEASURED = {"job_id", "source", "destination", "total_time_ms", "downtime_ms",
            "transferred_bytes", "iterations", "escalations", "guest_pause_ms"}  # fmt: skip
VERIFICATION_MEASURED = {"heartbeat_max_gap_ms", "network_max_gap_ms", "agent"}


def run_vmferry(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args],
                          env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def _local_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("VMFERRY_URL", "VMFERRY_TOKEN")}


@pytest.fixture
def server(lab: LabState) -> Iterator[str]:
    """A real `vmferry server` on the module's store, on a free loopback port: its URL."""
    with vmferry_server(_local_env()) as served:
        yield served.url


def _same_except_measured(local: dict[str, Any], remote: dict[str, Any]) -> None:
    assert set(remote) == set(local) == MIGRATE_KEYS
    kept = MEASURED | {"verification"}  # compared below, without its measured figures
    assert {k: v for k, v in remote.items() if k not in kept} == {
        k: v for k, v in local.items() if k not in kept
    }
    for key in ("total_time_ms", "downtime_ms", "transferred_bytes", "iterations"):
        assert isinstance(remote[key], int) and isinstance(local[key], int), key
        assert remote[key] >= 0 and local[key] >= 0, key
    assert isinstance(remote["escalations"], list) and isinstance(local["escalations"], list)
    v_local, v_remote = local["verification"], remote["verification"]
    assert set(v_remote) == set(v_local)
    assert {k: v for k, v in v_remote.items() if k not in VERIFICATION_MEASURED} == {
        k: v for k, v in v_local.items() if k not in VERIFICATION_MEASURED
    }
    for key in VERIFICATION_MEASURED - {"agent"}:
        assert type(v_remote[key]) is type(v_local[key]), key
    assert (v_remote["agent"] is None) == (v_local["agent"] is None)
    if v_local["agent"] is not None:
        assert set(v_remote["agent"]) == set(v_local["agent"])
        for key in ("ping", "mac_ok", "addresses_ok"):
            assert v_remote["agent"][key] == v_local["agent"][key], key


def test_a_move_there_here_and_back_through_the_server_reads_the_same(
    lab: LabState, lab_guests: Callable[..., GuestRecord], server: str
) -> None:
    name = "rc1"
    lab_guests(name, "kvm1", memory_mb=512, working_set_mb=64, dirty_mb_s=4)
    there = run_vmferry("migrate", name, "--to", "kvm2", "--json", env=_local_env())
    assert there.returncode == 0, there.stderr
    local = json.loads(there.stdout)
    assert (local["status"], local["source"], local["destination"]) == ("completed", "kvm1",
                                                                        "kvm2")  # fmt: skip

    added = run_vmferry("users", "add", "ops", "--role", "operator", "--json", env=_local_env())
    assert added.returncode == 0, added.stderr
    remote_env = {**_local_env(), "VMFERRY_URL": server,
                  "VMFERRY_TOKEN": json.loads(added.stdout)["token"]}  # fmt: skip
    back = run_vmferry("migrate", name, "--to", "kvm1", "--json", env=remote_env)
    assert back.returncode == 0, back.stderr
    remote = json.loads(back.stdout)
    assert (remote["status"], remote["source"], remote["destination"]) == ("completed", "kvm2",
                                                                           "kvm1")  # fmt: skip
    assert remote["job_id"] != local["job_id"]
    assert f"job {remote['job_id']} in the vmferry server at {server}" in back.stderr
    _same_except_measured(local, remote)

    # the job the server ran is the store's, read the same here and through the server
    shown_here = run_vmferry("job", "show", remote["job_id"], "--json", env=_local_env())
    shown_there = run_vmferry("job", "show", remote["job_id"], "--json", env=remote_env)
    assert shown_here.returncode == shown_there.returncode == 0, shown_there.stderr
    assert json.loads(shown_there.stdout) == json.loads(shown_here.stdout)
    assert json.loads(shown_here.stdout)["result"]["status"] == "completed"
    listed_here = run_vmferry("jobs", "--json", env=_local_env())
    listed_there = run_vmferry("jobs", "--json", env=remote_env)
    assert json.loads(listed_there.stdout) == json.loads(listed_here.stdout)
    assert [j["id"] for j in json.loads(listed_here.stdout)][:2] == [remote["job_id"],
                                                                     local["job_id"]]  # fmt: skip
