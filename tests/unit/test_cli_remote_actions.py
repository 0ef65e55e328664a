"""The command line's remote mode for the API's actions (check, predict, profile, plans, port
profiles, imports, job resume): the real API served by uvicorn on a loopback port in a thread
of this process, each command run here (``Served.local``) and through it
(``Served.remote``, VMFERRY_DB pointing nowhere) on the same store, SQLite and PostgreSQL:
the same output (text and ``--json``) and exit code, or, where the API does not answer
everything the local text shows, the difference docs/server.md "Remote mode" names.

No libvirt: the server's services are the fakes of tests/unit/server/action_fakes.py
(``create_app(services=...)``), and the local commands call the very same fakes (their
service calls are replaced with them here), so both sides answer from the same fleet and
store: the comparison is of the CLI's two paths, not of the services. Plans' moves are a
fake of service.migrate.migrate (``PlanMoves``) that the local `plan run` and the server's
runner both call."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from test_cli_remote import UNUSABLE_DB, Served, same
from unit.server.action_fakes import FakeActions, plan_migrate_of

from vmferry.cli import check_cmd, plan_cmd, predict_cmd, profile_cmd
from vmferry.model import Host, VmRecord, VmSpec, VmState
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult
from vmferry.model.settings import IMPORT_DIRS_SETTING
from vmferry.server.app import create_app
from vmferry.service import audit as audit_service
from vmferry.service import import_job, users
from vmferry.service import jobs as jobs_service
from vmferry.service import netprofile as netprofile_service
from vmferry.service.fleet import Fleet
from vmferry.service.lease import process_lease
from vmferry.service.plan import create_plan
from vmferry.service.plan_run import run_plan
from vmferry.store.db import Store

GIB = 2**30
HOLD_LIMIT_S = 30


def _vm(name: str, host: str, state: VmState = VmState.RUNNING, gib: float = 1) -> VmRecord:
    return VmRecord(host, state, True, VmSpec(name, f"uuid-{name}", 2, int(gib * GIB)))


FLEET = [
    _vm("web1", "kvm1", gib=2),
    _vm("web2", "kvm1", gib=4),
    _vm("db1", "kvm2", gib=16),
    _vm("off1", "kvm1", VmState.SHUT_OFF),
]

PLAN = """version: 1
name: remote
defaults: {wave_slice_s: 30}
hosts:
  - {name: kvm1, cpus: 16, memory_mb: 8192, link_gbps: 1, max_concurrent: 1}
  - {name: kvm2, cpus: 16, memory_mb: 8192, link_gbps: 1, max_concurrent: 1}
vms:
  - {name: web1, source: kvm1, destination: kvm2, memory_mb: 256, vcpus: 1}
  - {name: web2, source: kvm1, destination: kvm2, memory_mb: 512, vcpus: 1}
"""


def inventory(store: Store, host: str | None) -> Fleet:
    """What the hosts report (GET /vms): the fleet above."""
    if host is not None:
        store.get_host(host)
    return Fleet([r for r in FLEET if host is None or r.host == host], {})


@dataclass(frozen=True)
class MoveOutcome:
    result: MigrationResult


class PlanMoves:
    """service.migrate.migrate as a plan's runner calls it (through action_fakes'
    plan_migrate_of): the job is made, run and finished at once, or (``hold``) once
    ``release`` is set or a cancel is asked for."""

    def __init__(self, store: Store) -> None:
        self.store, self.hold, self.release = store, False, threading.Event()
        self.calls: list[str] = []

    def __call__(
        self,
        vm: str,
        to: str,
        options: MigrationOptions,
        *,
        on_job: Callable[[str], None] = lambda _id: None,
        **_other: object,
    ) -> MoveOutcome:
        self.calls.append(vm)
        job = self.store.create_job("migrate", vm, "kvm1", to, options)
        self.store.set_owner(job.id, process_lease(self.store))
        on_job(job.id)
        self.store.set_status(job.id, JobStatus.RUNNING)
        status = JobStatus.COMPLETED
        deadline = time.monotonic() + HOLD_LIMIT_S
        while self.hold and not self.release.wait(0.02) and time.monotonic() < deadline:
            if self.store.is_cancel_requested(job.id):
                status = JobStatus.CANCELLED
                break
        result = MigrationResult(
            job.id,
            vm,
            "kvm1",
            to,
            options.strategy,
            status,
            None if status is JobStatus.COMPLETED else "cancelled",
            1000,
            50,
            None,
            None,
        )
        self.store.finish(job.id, result)
        return MoveOutcome(result)


@pytest.fixture
def served(
    store: Store,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Served]:
    """The API with the fakes as its services; the local commands' service calls replaced
    with the same fakes. ``served.fake`` is the :class:`FakeActions`; ``served.moves``
    (set here) the plans' :class:`PlanMoves`."""
    for name in ("kvm1", "kvm2"):
        store.add_host(Host(name, f"qemu+tls://{name}/system"))  # never connected to
    tokens = {
        name: users.add_user(store, name, role, None)[1]
        for name, role in [
            ("admin", "admin"),
            ("ops", "operator"),
            ("planner", "planner"),
            ("viewer", "viewer"),
        ]
    }
    monkeypatch.setenv("VMFERRY_NETPROFILES", str(tmp_path / "netprofiles"))
    moves = PlanMoves(store)
    actions = FakeActions(store, list(FLEET), plan_migrate_of(moves))
    # the local commands call the same fakes the server calls
    monkeypatch.setattr(check_cmd, "check_migration", actions.check)
    monkeypatch.setattr(
        predict_cmd, "predict_migration", functools.partial(actions.predict, store=store)
    )

    def local_profile(vm: str | None, *, host: str | None, **kwargs: Any) -> Any:
        return actions.profile(vm, host=host, on_start=None, store=store, **kwargs)

    monkeypatch.setattr(profile_cmd, "profile_service", local_profile)
    monkeypatch.setattr(netprofile_service, "apply", actions.netprofile_apply)
    monkeypatch.setattr(netprofile_service, "remove", actions.netprofile_remove)
    monkeypatch.setattr(netprofile_service, "capture", actions.netprofile_capture)
    monkeypatch.setattr(
        plan_cmd, "create_plan", functools.partial(create_plan, measure=actions.measure)
    )
    monkeypatch.setattr(
        plan_cmd, "run_plan", functools.partial(run_plan, migrate_fn=actions.plan_migrate)
    )
    monkeypatch.setattr(import_job, "import_vm", actions.import_vm)
    monkeypatch.setattr(
        jobs_service, "reconcile_job", lambda job_id, wait_s: actions.resume(job_id)
    )
    app = create_app(
        store, inventory=inventory, migrate=moves, event_poll_s=0.02, services=actions.services()
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    got = Served(
        f"http://127.0.0.1:{port}",
        store,
        db_url,
        tokens,
        actions,  # type: ignore[arg-type]
        capsys,
        monkeypatch,
    )
    got.moves = moves  # type: ignore[attr-defined]
    try:
        yield got
    finally:
        moves.release.set()
        actions.release.set()
        server.should_exit = True
        thread.join(30)


def masked(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        text = text.replace(old, new)
    return text


# -- check, predict ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "extra", "code"), [("kvm2", (), 0), ("kvm2", ("--copy-storage",), 0), ("kvm1", (), 3)]
)
def test_check_is_the_same_through_the_server(
    served: Served, to: str, extra: tuple[str, ...], code: int
) -> None:
    as_json = same(served, "check", "web1", "--to", to, *extra, "--json")
    assert as_json.code == code
    assert json.loads(as_json.out)["blocked"] is (code == 3)
    text = same(served, "check", "web1", "--to", to, *extra)
    assert "web1: kvm1 -> " + to in text.out  # the source host, from GET /vms/web1
    if code:
        assert text.err.strip().endswith("1 blocker (see above)")


def test_check_of_an_unknown_vm_or_host_fails_the_same(served: Served) -> None:
    for args in (("ghost", "--to", "kvm2"), ("web1", "--to", "kvm9")):
        failed = same(served, "check", *args)
        assert failed.code == 2 and failed.out == ""
    assert "no VM named 'ghost'" in served.remote("check", "ghost", "--to", "kvm2").line()


def test_predict_json_is_the_same_and_its_text_the_rows_the_api_answers(served: Served) -> None:
    args = (
        "predict",
        "web1",
        "--to",
        "kvm2",
        "--max-downtime-ms",
        "200",
        "--bandwidth-mib-s",
        "50",
    )
    doc = json.loads(same(served, *args, "--json").out)
    assert (doc["vm"], doc["destination"], doc["inputs"]["downtime_limit_ms"]) == (
        "web1",
        "kvm2",
        200,
    )
    here, there = served.local(*args), served.remote(*args)
    assert here.code == there.code == 0

    def rows(out: str) -> dict[str, str]:
        found = {}
        for line in out.splitlines():
            cells = [c.strip() for c in line.strip("│┃ ").split("│")]
            if len(cells) == 2:
                found[cells[0]] = cells[1]
        return found

    mine, theirs = rows(here.out), rows(there.out)
    assert (
        "web1: kvm1 -> kvm2 (predicted)" in here.out
        and "web1: kvm1 -> kvm2 (predicted)" in there.out
    )
    for key in ("converges", "total time", "memory", "dirty rate", "link", "downtime", "stream"):
        assert theirs[key] == mine[key], key
    assert mine["guest pause"].startswith(theirs["guest pause"] + " (QEMU limit")  # not answered
    assert mine["transferred"].startswith(theirs["transferred"] + " in ")  # rounds: not answered
    assert "strategy" in mine and "strategy" not in theirs
    stopped = same(served, "predict", "off1", "--to", "kvm2")
    assert stopped.code == 2 and "only a running VM can be measured" in stopped.line()


# -- profile ----------------------------------------------------------------------------


def test_profile_is_the_same_through_the_server(served: Served) -> None:
    args = ("profile", "web1", "--duration", "1", "--interval", "0.25")
    here, there = served.local(*args, "--json"), served.remote(*args, "--json")
    assert here.code == there.code == 0
    mine, theirs = json.loads(here.out), json.loads(there.out)
    assert mine["samples"] == theirs["samples"] == 4
    assert mine["first_at"] < mine["last_at"] < theirs["first_at"] < theirs["last_at"]
    times = ("first_at", "last_at")
    assert masked(there.out, *((theirs[k], k) for k in times)) == masked(
        here.out, *((mine[k], k) for k in times)
    )  # the same document but for the run's times
    assert f"profiling web1 on kvm1 in the vmferry server at {served.url}" in there.err
    text_here, text_there = served.local(*args), served.remote(*args)
    assert (text_there.code, text_there.out) == (text_here.code, text_here.out)
    assert "web1: " in text_here.out and "samples" in text_here.out
    assert [c for c in served.fake.calls if c[0] == "profile"] == [("profile", "web1")] * 4
    stopped = same(served, "profile", "off1", "--duration", "1")
    assert stopped.code == 2 and "only a running VM has a workload" in stopped.line()


def test_profile_of_a_host_is_the_same_through_the_server(served: Served) -> None:
    args = ("profile", "--host", "kvm1", "--duration", "1", "--interval", "0.5")
    here, there = served.local(*args, "--json"), served.remote(*args, "--json")
    assert here.code == there.code == 0, there.err
    mine, theirs = json.loads(here.out), json.loads(there.out)
    assert [(r["vm"], r["samples"]) for r in mine] == [("web1", 2), ("web2", 2)]
    assert [(r["vm"], r["samples"]) for r in theirs] == [("web1", 2), ("web2", 2)]
    pairs = [(run[k], k) for run in [*mine, *theirs] for k in ("first_at", "last_at")]
    assert masked(there.out, *pairs) == masked(here.out, *pairs)
    assert f"profiling 2 VMs on kvm1 (web1, web2) in the vmferry server at {served.url}" in (
        " ".join(there.err.split())
    )
    text_here, text_there = served.local(*args), served.remote(*args)
    assert (text_there.code, text_there.out) == (text_here.code, text_here.out)
    assert "web1: " in text_there.out and "web2: " in text_there.out
    assert [c for c in served.fake.calls if c[0] == "profile"] == [("profile", "host kvm1")] * 4
    for bad in (("profile",), ("profile", "web1", "--host", "kvm1")):
        neither_here, neither_there = served.local(*bad), served.remote(*bad)
        assert neither_here.code == neither_there.code == 2
        assert (
            neither_there.line()
            == neither_here.line()
            == ("vmferry: profile either one VM or one host (--host), not both or neither")
        )
    unknown = same(served, "profile", "--host", "kvm9", "--duration", "1")
    assert unknown.code == 2 and "kvm9" in unknown.line()
    assert served.fake.calls[-1] == ("profile", "host kvm9")  # the server's; refused here


# -- plans ------------------------------------------------------------------------------


def plan_file(tmp: Path, text: str = PLAN, name: str = "waves.yaml") -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


PLAN_TIMES = ("created_at", "started_at", "finished_at", "actual_makespan_s")


def plan_shape(doc: dict[str, Any]) -> dict[str, Any]:
    """A plan's document without its id, times and jobs (two runs of one plan file)."""
    items = [
        {
            **i,
            "job_id": bool(i["job_id"]),
            "actual": None if i["actual"] is None else sorted(i["actual"]),
        }
        for i in doc["items"]
    ]
    return {
        **{k: v for k, v in doc.items() if k not in ("id", *PLAN_TIMES)},
        "items": items,
        "reason": masked(doc["reason"] or "", (doc["id"], "ID")),
    }


def test_plan_create_show_run_are_the_same_through_the_server(
    served: Served, tmp_path: Path
) -> None:
    path = plan_file(tmp_path)
    here, there = (
        served.local("plan", "create", path, "--json"),
        served.remote("plan", "create", path, "--json"),
    )
    assert here.code == there.code == 0 and here.err == there.err
    mine, theirs = json.loads(here.out), json.loads(there.out)
    assert mine["id"] != theirs["id"] and theirs["status"] == "pending"
    assert plan_shape(theirs) == plan_shape(mine)
    for plan_id in (mine["id"], theirs["id"]):  # each read here and there: the same
        assert json.loads(same(served, "plan", "show", plan_id, "--json").out)["id"] == plan_id
        assert f"plan {plan_id} (remote)" in same(served, "plan", "show", plan_id).out
    text_here = served.local("plan", "create", path)
    text_there = served.remote("plan", "create", path)
    ids = [re.search(r"plan (\w+) \(remote\)", r.out) for r in (text_here, text_there)]
    assert ids[0] and ids[1]
    assert masked(text_there.out, (ids[1].group(1), "ID")) == masked(
        text_here.out, (ids[0].group(1), "ID")
    )
    # the Gantt chart: the server's, written here as the local one is
    for suffix in ("html", "png"):
        local_chart, remote_chart = tmp_path / f"here.{suffix}", tmp_path / f"there.{suffix}"
        assert served.local("plan", "show", theirs["id"], "--gantt", str(local_chart)).code == 0
        shown = served.remote("plan", "show", theirs["id"], "--gantt", str(remote_chart))
        # Rich wraps the line at the terminal's width, in the path too: compare unwrapped
        said = "".join(shown.err.split())
        assert shown.code == 0 and f"Ganttchartwrittento{remote_chart}" in said, shown.err
        assert remote_chart.read_bytes() == local_chart.read_bytes()  # the same chart
    bad_suffix = same(served, "plan", "show", theirs["id"], "--gantt", str(tmp_path / "x.svg"))
    assert bad_suffix.code == 2 and "should end in .html or .png" in bad_suffix.line()
    # run: here the local runner, there the server's; both to the end
    ran_here = served.local("plan", "run", mine["id"], "--json")
    ran_there = served.remote("plan", "run", theirs["id"], "--json")
    assert ran_here.code == ran_there.code == 0, (ran_here.err, ran_there.err)
    done_here, done_there = json.loads(ran_here.out), json.loads(ran_there.out)
    assert done_there["status"] == done_here["status"] == "completed"
    assert plan_shape(done_there) == plan_shape(done_here)
    assert done_there == json.loads(served.local("plan", "show", theirs["id"], "--json").out)
    for line in (
        f"running plan {theirs['id']} in the vmferry server at {served.url}",
        "web1: completed in 1.0 s",
        "web2: completed in 1.0 s",
        f"plan {theirs['id']} completed",
    ):
        assert line in ran_there.err, ran_there.err
    assert sorted(served.moves.calls) == ["web1", "web1", "web2", "web2"]  # type: ignore[attr-defined]
    again = same(served, "plan", "run", theirs["id"])  # finished: nothing to run
    assert again.code == 2 and "there is nothing to run" in again.line()
    paused = same(served, "plan", "pause", theirs["id"])
    assert paused.code == 2 and "nothing to pause" in paused.line()


def test_a_plan_driven_from_two_terminals_and_a_script(served: Served, tmp_path: Path) -> None:
    """Terminal 1 runs the plan (a real `vmferry plan run` process following it), terminal
    2 pauses it and reads it, a script resumes it to the end: all through the server."""
    moves: PlanMoves = served.moves  # type: ignore[attr-defined]
    moves.hold = True
    plan_id = json.loads(
        served.remote("plan", "create", plan_file(tmp_path), "--json", who="planner").out
    )["id"]
    env = {
        **os.environ,
        "VMFERRY_URL": served.url,
        "VMFERRY_TOKEN": served.tokens["ops"],
        "VMFERRY_DB": UNUSABLE_DB,
    }
    terminal1 = subprocess.Popen(
        [sys.executable, "-m", "vmferry.cli.main", "plan", "run", plan_id, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not moves.calls:
            assert terminal1.poll() is None, terminal1.communicate()
            assert time.monotonic() < deadline, "the plan did not start"
            time.sleep(0.05)
        twice = served.remote("plan", "run", plan_id, who="ops")  # a second runner: refused
        assert twice.code == 2
        assert "is being started or run by this server already" in twice.line()
        pause = served.remote("plan", "pause", plan_id, who="ops")
        assert (pause.code, " ".join(pause.out.split())) == (
            0,
            f"plan {plan_id}: running (pause requested; the running migrations finish first)",
        )
        shown = same(served, "plan", "show", plan_id, "--json", who="viewer")
        assert json.loads(shown.out)["requested"] == "pause"
        time.sleep(2 * plan_cmd.POLL_S + 0.2)  # terminal 1's polls see the move running
        moves.release.set()  # the first move ends; the runner pauses the plan
        out, err = terminal1.communicate(timeout=30)
    finally:
        if terminal1.poll() is None:
            terminal1.kill()
    assert terminal1.returncode == 0, err
    stopped = json.loads(out)
    assert stopped["status"] == "paused"
    assert [i["status"] for i in stopped["items"]] == ["completed", "pending"]
    assert f"plan {plan_id} paused: paused by `vmferry plan pause`" in err
    first = moves.calls[0]  # seen running by terminal 1's polls, then done
    assert f"• {first}: kvm1 -> kvm2 (live, wave 1)" in err and f"• {first}: completed" in err
    resumed = served.remote("plan", "resume", plan_id, who="ops")  # the script
    assert resumed.code == 0, resumed.err
    assert "status completed" in resumed.out and "web2: completed" in resumed.err
    final = same(served, "plan", "show", plan_id)
    assert final.code == 0 and "completed" in final.out
    assert sorted(moves.calls) == ["web1", "web2"]  # one move each: web2's after the pause


def test_plan_cancel_is_the_same_through_the_server(served: Served, tmp_path: Path) -> None:
    path = plan_file(tmp_path)
    ids = [json.loads(served.local("plan", "create", path, "--json").out)["id"] for _ in "ab"]
    here, there = served.local("plan", "cancel", ids[0]), served.remote("plan", "cancel", ids[1])
    assert (there.code, masked(there.out, (ids[1], "ID"))) == (
        here.code,
        masked(here.out, (ids[0], "ID")),
    )
    assert there.out.strip() == f"plan {ids[1]}: cancelled"
    as_json = same(served, "plan", "cancel", ids[1], "--json")
    assert as_json.code == 2 and "nothing to cancel" in as_json.line()


def test_plan_errors_through_the_server(served: Served, tmp_path: Path) -> None:
    bad = plan_file(tmp_path, PLAN.replace("memory_mb: 256", "memory_mb: -1"), "bad.yaml")
    here, there = served.local("plan", "create", bad), served.remote("plan", "create", bad)
    assert (there.code, there.out, there.err) == (here.code, here.out, here.err)
    assert here.code == 2 and "bad.yaml:8: vms[0].memory_mb" in here.err  # its line, its name
    missing = same(served, "plan", "create", str(tmp_path / "none.yaml"))
    assert missing.code == 2 and "vmferry: cannot read the plan" in missing.err.splitlines()[-1]
    for args in (("show", "nope"), ("run", "nope"), ("pause", "nope"), ("cancel", "nope")):
        unknown = same(served, "plan", *args)
        assert unknown.code == 2 and "nope" in unknown.line()
    refused = served.remote("plan", "create", plan_file(tmp_path), who="viewer")
    assert refused.code == 2 and refused.out == ""
    assert refused.err.splitlines()[-1].startswith(
        "vmferry: refused by the server's rule role.viewer"
    )
    assert served.store.list_plans() == []


# -- port profiles ----------------------------------------------------------------------


def test_netprofiles_are_the_same_through_the_server(served: Served) -> None:
    define = (
        "netprofile",
        "define",
        "web",
        "--network",
        "default",
        "--in-kib-s",
        "1000",
        "--allow",
        "tcp:80,443",
        "--level",
        "dmz",
    )
    here, there = served.local(*define), served.remote(*define)
    assert (there.code, there.out, there.err) == (here.code, here.out, here.err)
    assert here.code == 0 and here.out.startswith("defined web")
    assert same(served, *define, "--json").code == 0
    same(served, "netprofile", "define", "db", "--network", "default", "--no-acl")
    listed = json.loads(same(served, "netprofile", "list", "--json").out)
    assert [p["name"] for p in listed] == ["db", "web"]
    assert "dmz" in same(served, "netprofile", "list").out
    assert json.loads(same(served, "netprofile", "show", "web", "--json").out)["acl"] == [
        "tcp:80,443"
    ]
    assert "web" in same(served, "netprofile", "show", "web").out
    removed = served.remote("netprofile", "remove", "db")
    assert (removed.code, removed.out.strip()) == (0, "removed named profile db")
    served.local("netprofile", "define", "db", "--network", "default")
    removed_here = served.local("netprofile", "remove", "db", "--json")
    removed_there = served.remote("netprofile", "remove", "web", "--json")
    assert removed_there.out.replace("web", "db") == removed_here.out
    assert json.loads(removed_there.out) == {"removed": ["named profile web"]}
    gone = same(served, "netprofile", "show", "db")
    assert gone.code == 2 and "db" in gone.line()
    bad_acl = served.remote("netprofile", "define", "x", "--network", "n", "--allow", "nope:1")
    assert (
        bad_acl.code
        == served.local("netprofile", "define", "x", "--network", "n", "--allow", "nope:1").code
        == 2
    )
    actions = [(e.user, e.action, e.result) for e in audit_service.entries(served.store)]
    assert ("admin", "netprofiles.write", "ok") in actions
    viewer = served.remote("netprofile", "define", "v", "--network", "n", who="viewer")
    assert viewer.code == 2 and "refused by the server's rule" in viewer.line()


def test_netprofiles_on_hosts_are_the_same_through_the_server(served: Served) -> None:
    """`netprofile apply|remove --host` and `capture`: the same output and exit codes (the
    services are the fakes: no libvirt), each audited."""
    same(served, "netprofile", "define", "web", "--network", "default", "--in-kib-s", "1000")
    for form in ((), ("--json",)):
        applied = same(served, "netprofile", "apply", "web", "--host", "kvm1", *form)
        assert applied.code == 0
    assert json.loads(applied.out)["portgroup"] == "added"
    assert same(served, "netprofile", "apply", "web", "--host", "kvm1").out == (
        "web on kvm1: portgroup added, rules none\n"
    )
    removed = same(served, "netprofile", "remove", "web", "--host", "kvm1", "--json")
    assert json.loads(removed.out) == {"removed": ["portgroup web of default"]}
    served.fake.in_use["web"] = "web1"
    busy = same(served, "netprofile", "remove", "web", "--host", "kvm1")
    assert (busy.code, busy.line()) == (2, "vmferry: profile 'web' is in use on kvm1 by web1")
    unknown = same(served, "netprofile", "apply", "nope", "--host", "kvm1")
    assert unknown.code == 2 and "no port profile 'nope'" in unknown.line()
    captured = same(served, "netprofile", "capture", "web1", "--json")
    doc = json.loads(captured.out)
    assert (doc["host"], [p["profile"] for p in doc["ports"]]) == ("kvm1", ["captured"])
    assert doc["profiles"][0]["inbound"]["average_kib_s"] == 1000
    text = same(served, "netprofile", "capture", "web1")
    assert "52:54:00:00:00:01" in text.out and "kept captured" in text.out
    planner = served.remote("netprofile", "apply", "web", "--host", "kvm1", who="planner")
    assert planner.code == 2 and "refused by the server's rule role.planner" in planner.line()
    trail = [(e.action, e.target, e.result) for e in audit_service.entries(served.store)
             if e.action == "netprofiles.write" and e.user == "admin"]  # fmt: skip
    assert ("netprofiles.write", "web1", "ok") in trail  # the capture
    assert trail.count(("netprofiles.write", "web", "ok")) >= 5  # define, apply x3, remove


# -- imports ----------------------------------------------------------------------------


@pytest.fixture
def imports(served: Served, tmp_path: Path) -> Path:
    folder = tmp_path / "imports"
    folder.mkdir()
    (folder / "disk.raw").write_bytes(bytes(1 << 20))
    served.store.set_setting(IMPORT_DIRS_SETTING, str(folder))
    return folder


def without_uuid(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "domain_xml": re.sub(r"<uuid>[^<]*</uuid>", "<uuid/>", doc["domain_xml"])}


@pytest.mark.parametrize("dry_run", [False, True])
def test_import_is_the_same_through_the_server(
    served: Served, imports: Path, dry_run: bool
) -> None:
    args = (
        "import",
        str(imports / "disk.raw"),
        "--to",
        "kvm2",
        "--name",
        "imp1",
        "--vcpus",
        "4",
        *(("--dry-run",) if dry_run else ()),
    )
    here, there = served.local(*args, "--json"), served.remote(*args, "--json")
    assert here.code == there.code == 0, there.err
    mine, theirs = json.loads(here.out), json.loads(there.out)
    ids = mine.pop("job_id", None), theirs.pop("job_id", None)
    assert without_uuid(theirs) == without_uuid(mine)
    assert theirs["status"] == ("dry-run" if dry_run else "completed")
    jobs = served.store.list_jobs()
    if dry_run:
        assert jobs == [] and ids == (None, None)
    else:  # each import is a job, run here or there; --json names it
        assert [(j.kind, j.vm, j.status) for j in jobs] == [("import", "imp1",
                                                             JobStatus.COMPLETED)] * 2  # fmt: skip
        assert set(ids) == {j.id for j in jobs}
        assert f"job {ids[1]} in the vmferry server at {served.url}" in there.err
        assert "disk 0: 100%" in there.err
    text_here, text_there = served.local(*args), served.remote(*args)
    assert text_there.code == text_here.code == 0
    uuid = re.compile(r"<uuid>[^<]*</uuid>|[0-9a-f]{8}-[0-9a-f-]{27}")
    assert uuid.sub("U", text_there.out) == uuid.sub("U", text_here.out)


def test_import_paths_are_the_servers(served: Served, imports: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.raw"
    outside.write_bytes(bytes(1 << 20))
    refused = served.remote("import", str(outside), "--to", "kvm2")
    assert refused.code == 2 and refused.out == ""
    assert refused.line() == (
        f"vmferry: refused by the server's rule import.path: source "
        f"{outside} is not inside the import directories "
        f"(server.import_dirs: {imports})"
    )
    sneaky = served.remote("import", f"{imports}/../elsewhere.raw", "--to", "kvm2")
    assert "rule import.path" in sneaky.line()
    relative = served.remote("import", "disk.raw", "--to", "kvm2")
    assert relative.code == 2 and "a path on the server's machine" in relative.line()
    viewer = served.remote("import", str(imports / "disk.raw"), "--to", "kvm2", who="viewer")
    assert viewer.code == 2 and "refused by the server's rule" in viewer.line()
    unknown_host = served.remote("import", str(imports / "disk.raw"), "--to", "kvm9")
    assert unknown_host.code == 2 and "kvm9" in unknown_host.line()
    assert served.store.list_jobs() == []
    assert [c for c in served.fake.calls if c[0] == "import"] == []


# -- job resume -------------------------------------------------------------------------


def test_job_resume_is_the_same_through_the_server(served: Served) -> None:
    waiting = served.store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    served.store.add_event(waiting.id, "note", "libvirt cannot tell yet")
    done = served.store.create_job("migrate", "db1", "kvm2", "kvm1", MigrationOptions())
    served.store.set_status(done.id, JobStatus.RUNNING)
    served.store.set_status(done.id, JobStatus.FAILED, "it failed")
    still = same(served, "job", "resume", waiting.id)
    assert still.code == 0 and still.err.strip() == (
        f"job {waiting.id} is still pending: libvirt cannot tell yet"
    )
    finished = same(served, "job", "resume", done.id)
    assert finished.out.strip() == f"job {done.id}: failed: it failed"
    assert json.loads(same(served, "job", "resume", done.id, "--json").out)["id"] == done.id
    assert served.fake.resumed == [waiting.id, waiting.id, done.id, done.id, done.id, done.id]
    unknown = same(served, "job", "resume", "nope")
    assert unknown.code == 2 and "no job 'nope'" in unknown.line()
    viewer = served.remote("job", "resume", done.id, who="viewer")
    assert viewer.code == 2 and "refused by the server's rule" in viewer.line()
    waits = served.remote("job", "resume", done.id, "--wait", "5")
    assert waits.code == 2 and "`vmferry job resume --wait` has no remote form yet" in waits.line()
