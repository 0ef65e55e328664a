"""API benchmark (issue 13): the inventory of 10,000 VMs paged at 100, job event streams under
load, and the orchestrator's CPU per running migration.

1. **Inventory.** ``--hosts`` libvirt test-driver hosts (``test:///FILE``: a node file with
   its domains, libvirt's own driver, no QEMU) hold ``--vms`` synthetic VMs between them; a
   real `vmferry server` (its own SQLite store) answers ``GET /api/v1/vms?limit=100&offset=N``
   for random pages, one client after the other: p50 and p99 latency. Twice: reading the
   hosts at every request (``--inventory-ttl 0``: vmferry's whole path, libvirt included)
   and with the server's default (each host's list reused for 5 s).
2. **Event streams.** 10 jobs "run" (a writer appends an event to each every 0.2 s, as a
   busy migration's record does) while 50 clients follow them through
   ``GET /api/v1/jobs/{id}/events`` (SSE): each event's delay from its ``at`` to its arrival
   (p50, p99), and the server's CPU (``/proc/PID/stat``) over the run, per running job.
3. **Orchestrator CPU** (``--lab``): the lab is started and a guest moved between its hosts
   ``--moves`` times by ``service.migrate.migrate`` in this process, as a worker drives a
   move (checks, move, verification, record): this process's CPU time over the moves' wall
   time.

    sudo .venv/bin/python bench/api.py [--lab]     # table on stderr, JSON on stdout
    sudo .venv/bin/python bench/api.py --json      # JSON only

Targets: none for the latencies (the issue asks for the figures); the orchestrator's CPU
per running migration under 1 % of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from vmferry.model import Host
from vmferry.model.migration import JobStatus, MigrationOptions
from vmferry.service import users
from vmferry.store.db import open_store

TICKS = os.sysconf("SC_CLK_TCK")


def vmferry(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


def node_file(path: Path, first: int, count: int) -> Path:
    """A libvirt test-driver node with ``count`` running domains vm<first>...: 1-4 vCPUs,
    0.5-16 GiB."""
    rng = random.Random(first)
    domains = []
    for n in range(first, first + count):
        memory_kib = rng.choice((512, 1024, 2048, 4096, 8192, 16384)) * 1024
        domains.append(f"<domain type='test'><name>vm{n:05d}</name><uuid>{uuid.UUID(int=n)}"
                       f"</uuid><memory>{memory_kib}</memory><vcpu>{rng.randint(1, 4)}</vcpu>"
                       "<os><type>hvm</type></os></domain>")  # fmt: skip
    path.write_text("<node><cpu><nodes>1</nodes><sockets>2</sockets><cores>32</cores>"
                    "<threads>2</threads><active>128</active><mhz>2400</mhz><model>x86_64"
                    "</model></cpu><memory>1073741824</memory>" + "".join(domains)
                    + "</node>")  # fmt: skip
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_server(env: dict[str, str], port: int, ttl_s: float) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "vmferry.cli.main", "server", "--listen",
               f"127.0.0.1:{port}", "--log-level", "warning", "--inventory-ttl",
               str(ttl_s)]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
            return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("vmferry server did not start within 60 s")


def inventory(base: str, token: str, total: int, requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    times, pages = [], max(1, total // 100)
    rng = random.Random(7)
    with httpx.Client(timeout=120) as client:
        first = client.get(f"{base}/vms", params={"limit": 100}, headers=headers)
        first.raise_for_status()
        assert first.json()["total"] == total, first.json()["total"]
        for _ in range(requests):
            offset = rng.randrange(pages) * 100
            t0 = time.perf_counter()
            answer = client.get(f"{base}/vms", params={"limit": 100, "offset": offset},
                                headers=headers)  # fmt: skip
            times.append((time.perf_counter() - t0) * 1000)
            answer.raise_for_status()
            assert len(answer.json()["items"]) == 100
    return {"vms": total, "requests": requests, "p50_ms": round(statistics.median(times), 1),
            "p99_ms": round(pct(times, 0.99), 1), "max_ms": round(max(times), 1)}  # fmt: skip


def streams(base: str, token: str, db_url: str, server_pid: int, clients: int, jobs: int,
            seconds: float) -> dict[str, Any]:  # fmt: skip
    store = open_store(db_url)
    store.add_host(Host("sim1", "test:///default"))
    store.add_host(Host("sim2", "test:///default"))
    ids = []
    for n in range(jobs):
        job = store.create_job("migrate", f"sim{n:02d}", "sim1", "sim2", MigrationOptions())
        store.set_status(job.id, JobStatus.RUNNING)
        ids.append(job.id)
    stop, delays, lock = threading.Event(), [], threading.Lock()

    def writer() -> None:
        n = 0
        while not stop.wait(0.2):
            n += 1
            for job_id in ids:
                store.add_event(job_id, "progress", f"pass {n}", {"remaining_bytes": 1 << 30})

    def follow(job_id: str) -> None:
        with httpx.Client(timeout=None) as client, client.stream(
            "GET", f"{base}/jobs/{job_id}/events", headers={"Authorization": f"Bearer {token}"}
        ) as answer:  # fmt: skip
            for line in answer.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event.get("kind") != "progress":
                        continue
                    at = datetime.fromisoformat(event["at"].replace("Z", "+00:00"))
                    with lock:
                        delays.append((datetime.now(UTC) - at).total_seconds() * 1000)

    followers = [threading.Thread(target=follow, args=(ids[i % jobs],), daemon=True)
                 for i in range(clients)]  # fmt: skip
    for thread in followers:
        thread.start()
    time.sleep(2)  # every client connected
    with lock:
        delays.clear()
    cpu0, t0 = cpu_s(server_pid), time.monotonic()
    feeding = threading.Thread(target=writer, daemon=True)
    feeding.start()
    time.sleep(seconds)
    cpu = cpu_s(server_pid) - cpu0
    wall = time.monotonic() - t0
    stop.set()
    feeding.join(5)
    for job_id in ids:  # the streams end with their jobs
        store.set_status(job_id, JobStatus.CANCELLED, "benchmark over")
    for thread in followers:
        thread.join(10)
    store.close()
    share = cpu / wall
    return {"clients": clients, "jobs": jobs, "events_per_job_s": 5, "seconds": round(wall, 1),
            "events_received": len(delays),
            "delay_p50_ms": round(statistics.median(delays), 1),
            "delay_p99_ms": round(pct(delays, 0.99), 1),
            "server_cpu_share": round(share, 4),
            "server_cpu_share_per_job": round(share / jobs, 4)}  # fmt: skip


def _virsh_move(name: str, src: str, dst: str) -> tuple[float, float]:
    """The baseline: ``virsh migrate --live --p2p`` of ``name`` (no checks, no verification,
    no record): its wall time and its process's CPU time (user + system, ``wait4``)."""
    from vmferry.lab import lifecycle

    migration_uri = f"tcp://198.18.1.{11 if dst == 'kvm1' else 12}"
    argv = ["virsh", "-c", lifecycle.host_uri(src), "migrate", "--live", "--p2p",
            "--persistent", "--undefinesource", "--unsafe", name, lifecycle.host_uri(dst),
            migration_uri]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"virsh migrate {name} {src} -> {dst} failed")
    return wall, usage.ru_utime + usage.ru_stime


def orchestrator(moves: int, slow_mib_s: int) -> dict[str, Any]:
    """Real moves in the lab, driven by :func:`vmferry.service.migrate.migrate` in this
    process, as a worker drives them: this process's CPU time (every thread: the engine's
    polling, the record's writer, the event listeners) over each move's wall time, less the
    lab's console witness (a thread of this process that tails the guest's serial console
    every 20 ms: the lab's, not vmferry's; reported on its own). ``moves`` at the link's
    rate, then two at ``slow_mib_s``: their extra CPU over their extra time is the cost of
    a second more of transfer, the rest the fixed cost of a move (checks, connections,
    verification). The baseline: ``virsh migrate --live --p2p`` of the same guest."""
    with tempfile.TemporaryDirectory(prefix="vmferry-bench-api-") as folder:
        os.environ["VMFERRY_DB"] = f"sqlite:///{folder}/lab.db"
        from vmferry.lab import guests, lifecycle
        from vmferry.lab.console import ConsoleTail
        from vmferry.service.migrate import migrate

        witness_cpu = [0.0]
        tail_run = ConsoleTail._run

        def timed_run(self: ConsoleTail) -> None:
            try:
                tail_run(self)
            finally:
                witness_cpu[0] += time.thread_time()

        ConsoleTail._run = timed_run  # type: ignore[method-assign]
        lifecycle.up(hosts=2)
        try:
            guests.create_guest("bapi", "kvm1", memory_mb=256, working_set_mb=64)
            rows: list[dict[str, Any]] = []
            here = "kvm1"
            for n in range(moves + 2):
                to = "kvm2" if here == "kvm1" else "kvm1"
                slow = n >= moves
                options = MigrationOptions(bandwidth_mib_s=slow_mib_s if slow else None)
                c0, t0, w0 = time.process_time(), time.monotonic(), witness_cpu[0]
                outcome = migrate("bapi", to, options)
                wall, cpu = time.monotonic() - t0, time.process_time() - c0
                witness = witness_cpu[0] - w0
                result = outcome.result
                if result.status is not JobStatus.COMPLETED:
                    raise SystemExit(f"move {n + 1}: {result.status}: {result.reason}")
                here = to
                rows.append({"to": to, "bandwidth_mib_s": options.bandwidth_mib_s,
                             "wall_s": round(wall, 2), "cpu_s": round(cpu - witness, 3),
                             "lab_witness_cpu_s": round(witness, 3),
                             "migration_s": round((result.total_time_ms or 0) / 1000, 2),
                             "cpu_share": round((cpu - witness) / wall, 4)})  # fmt: skip
            virsh: list[dict[str, Any]] = []
            for _ in range(2):
                to = "kvm2" if here == "kvm1" else "kvm1"
                wall, cpu = _virsh_move("bapi", here, to)
                here = to
                virsh.append({"to": to, "wall_s": round(wall, 2), "cpu_s": round(cpu, 3)})
        finally:
            ConsoleTail._run = tail_run  # type: ignore[method-assign]
            lifecycle.down()
    fast, slowed = rows[:moves], rows[moves:]
    cpu_total = sum(r["cpu_s"] for r in fast)
    wall_total = sum(r["wall_s"] for r in fast)
    extra_cpu = statistics.mean(r["cpu_s"] for r in slowed) - cpu_total / moves
    extra_wall = statistics.mean(r["wall_s"] for r in slowed) - wall_total / moves
    per_s = extra_cpu / extra_wall if extra_wall > 0 else float("nan")
    fixed = cpu_total / moves - per_s * wall_total / moves
    return {"moves": rows, "cpu_s_total": round(cpu_total, 3),
            "wall_s_total": round(wall_total, 2),
            "cpu_share_per_running_migration": round(cpu_total / wall_total, 4),
            "transfer_cpu_share": round(per_s, 4),
            "fixed_cpu_s_per_move": round(fixed, 3),
            "virsh": virsh,
            "virsh_cpu_share": round(sum(v["cpu_s"] for v in virsh)
                                     / sum(v["wall_s"] for v in virsh), 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--lab", action="store_true", help="also measure real moves (root)")
    parser.add_argument(
        "--parts",
        default="inventory,streams",
        help="which to run, of inventory, streams, lab (--lab adds lab)",
    )
    parser.add_argument("--moves", type=int, default=4)
    parser.add_argument(
        "--slow-mib-s",
        type=int,
        default=8,
        help="the two slow moves' bandwidth (the transfer's own cost)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts = set(args.parts.split(",")) | ({"lab"} if args.lab else set())
    if not parts <= {"inventory", "streams", "lab"}:
        raise SystemExit(f"--parts: {args.parts}: only inventory, streams and lab")
    report: dict[str, Any] = {"python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory(prefix="vmferry-bench-api-") as folder:
        root = Path(folder)
        db_url = f"sqlite:///{root / 'vmferry.db'}"
        env = {**os.environ, "VMFERRY_DB": db_url}
        store = open_store(db_url)
        each = args.vms // args.hosts
        for h in range(args.hosts):
            path = node_file(root / f"host{h}.xml", h * each, each)
            store.add_host(Host(f"t{h}", f"test://{path}"))
        token = users.add_user(store, "bench", "admin", None)[1]
        store.close()
        for key, ttl in (("inventory", 0.0), ("inventory_cached", 5.0)):
            if "inventory" not in parts:
                break
            port = free_port()
            server = start_server(env, port, ttl)
            try:
                pages = inventory(f"http://127.0.0.1:{port}/api/v1", token, each * args.hosts,
                                  args.requests)  # fmt: skip
                report[key] = {"hosts": args.hosts, "inventory_ttl_s": ttl, **pages}
            finally:
                server.terminate()
                server.wait(30)
        if "streams" in parts:
            port = free_port()
            server = start_server(env, port, 5.0)
            base = f"http://127.0.0.1:{port}/api/v1"
            try:
                report["streams"] = streams(base, token, db_url, server.pid, args.clients,
                                            args.jobs, args.seconds)  # fmt: skip
            finally:
                server.terminate()
                server.wait(30)
    if "lab" in parts:
        report["orchestrator"] = orchestrator(args.moves, args.slow_mib_s)
    if not args.json:
        lines = ["| figure | vmferry | target |", "|---|---|---|"]
        if "inventory" in report:
            inv, cached = report["inventory"], report["inventory_cached"]
            lines += [f"| GET /vms, {inv['vms']} VMs on {inv['hosts']} hosts, page of 100: p50 | "
                      f"{inv['p50_ms']} ms | - |",
                      f"| same: p99 | {inv['p99_ms']} ms | - |",
                      "| same, inventory reused 5 s (the default): p50 | "
                      f"{cached['p50_ms']} ms | - |",
                      f"| same: p99 | {cached['p99_ms']} ms | - |"]  # fmt: skip
        if "streams" in report:
            st = report["streams"]
            lines += [f"| {st['clients']} SSE clients, {st['jobs']} jobs: event delay p50 | "
                      f"{st['delay_p50_ms']} ms | - |",
                      f"| same: p99 | {st['delay_p99_ms']} ms | - |",
                      "| server CPU per running job | "
                      f"{100 * st['server_cpu_share_per_job']:.2f} % of a core | - |"]  # fmt: skip
        if "orchestrator" in report:
            orc = report["orchestrator"]
            share, virsh = orc["cpu_share_per_running_migration"], orc["virsh_cpu_share"]
            lines += [f"| orchestrator CPU per running migration ({len(orc['moves']) - 2} "
                      f"moves at the link's rate) | {100 * share:.2f} % of a core "
                      f"(virsh migrate: {100 * virsh:.2f} %) | < 1 % |",
                      "| of which a second more of transfer | "
                      f"{100 * orc['transfer_cpu_share']:.2f} % of a core | - |",
                      f"| fixed cost per move (checks, connections, verification) | "
                      f"{orc['fixed_cpu_s_per_move']:.3f} s of CPU | - |"]  # fmt: skip
        sys.stderr.write("\n".join(lines) + "\n")
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
