"""The command line's remote mode (VMFERRY_URL, VMFERRY_TOKEN): the real API served by
uvicorn on a loopback port in a thread of this process, the CLI run here (``run``) against
it and, for the same question, locally on the same store (SQLite and PostgreSQL): the same
output and exit code. Remote runs point VMFERRY_DB at a database that cannot be opened, so
a remote command that touched the local store would fail. Hosts are libvirt's test driver
(test:///default, read for real on both sides); moves are a fake of the service's migrate
(no libvirt) that both the local command and the server call."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn

from vmferry.cli import migrate_cmd
from vmferry.cli.main import run
from vmferry.client.api import ApiClient, JobFollower, error_for, parse_sse
from vmferry.client.remote import LOCAL_ALWAYS, REMOTE_FORMS, command_path
from vmferry.errors import (
    AlreadyExistsError,
    BadInputError,
    ForbiddenError,
    HostUnreachableError,
    NotAuthenticatedError,
    NotFoundError,
    ServerError,
)
from vmferry.model import Host
from vmferry.model.finding import Finding, Severity
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import (
    Escalation,
    EscalationStep,
    JobStatus,
    MigrationOptions,
    MigrationResult,
    Verification,
)
from vmferry.server.app import create_app
from vmferry.service import users
from vmferry.service.lease import process_lease
from vmferry.store.db import Store

UNUSABLE_DB = "sqlite:////nonexistent-vmferry-dir/remote-mode-must-not-open-this.db"
HOLD_LIMIT_S = 30  # a held fake move ends by itself after this, whatever the test does


# -- a fake of service.migrate.migrate, as the CLI and the server call it -----------------


@dataclass(frozen=True)
class FakeCheck:
    blocked: bool


@dataclass(frozen=True)
class FakeOutcome:
    result: MigrationResult
    check: FakeCheck
    backup_blocked: bool = False
    rolled_back_by: str | None = None


@dataclass
class ServiceLikeMigrate:
    """What service.migrate.migrate does to the store, by VM name: ``ghost`` is on no host
    (NotFoundError, no job); ``blocked`` fails its checks (the job, with its ``checks``
    event, finished at once, ``on_job`` not called); ``broken`` fails after starting;
    ``held*`` runs until a cancel is asked for; ``slow`` starts only when
    ``slow_release`` is set; any other VM completes, verified."""

    store: Store
    slow_release: threading.Event = field(default_factory=threading.Event)
    slow_entered: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def __call__(
        self, vm: str, to: str, options: MigrationOptions, *,
        on_job: Callable[[str], None] = lambda _id: None,
        note: Callable[[str], None] = lambda _m: None, **_progress: object,
    ) -> FakeOutcome:  # fmt: skip
        note(f"checking {vm} -> {to}")
        if vm == "ghost":
            raise NotFoundError(f"no VM named {vm!r} on the registered hosts")
        if vm == "slow":
            self.slow_entered.set()
            self.slow_release.wait(HOLD_LIMIT_S)
        job = self.store.create_job("migrate", vm, "t1", to, options)
        self.store.set_owner(job.id, process_lease(self.store))
        findings = [
            Finding("cpu.incompatible", Severity.BLOCKER, "the CPU differs", "pick")
            if vm == "blocked"
            else Finding("disk.cache", Severity.WARNING, "cache")
        ]
        self.store.add_event(job.id, "checks", f"pre-flight: 1 findings, "
                             f"{'blocked' if vm == 'blocked' else 'clear'}",
                             {"findings": to_jsonable(findings)})  # fmt: skip
        if vm == "blocked":
            return self._end(
                job.id,
                vm,
                to,
                options,
                JobStatus.FAILED,
                "blocked by pre-flight checks: cpu.incompatible",
                blocked=True,
            )
        on_job(job.id)
        self.store.set_status(job.id, JobStatus.RUNNING)
        self.store.add_event(job.id, "setting", "downtime limit 30 ms", {"downtime_ms": 30})
        note("downtime limit 30 ms")
        if vm.startswith("held"):
            deadline = time.monotonic() + HOLD_LIMIT_S
            while not self.store.is_cancel_requested(job.id) and not self.stop.is_set():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            return self._end(job.id, vm, to, options, JobStatus.CANCELLED, "interrupted (Ctrl-C)")
        if vm == "broken":
            return self._end(job.id, vm, to, options, JobStatus.FAILED,
                             "libvirt: unable to connect to the destination")  # fmt: skip
        return self._end(job.id, vm, to, options, JobStatus.COMPLETED, None)

    def _end(
        self,
        job_id: str,
        vm: str,
        to: str,
        options: MigrationOptions,
        status: JobStatus,
        reason: str | None,
        *,
        blocked: bool = False,
    ) -> FakeOutcome:
        moved = status is JobStatus.COMPLETED
        result = MigrationResult(
            job_id, vm, "t1", to, options.strategy, status, reason,
            1234 if moved else None, 87 if moved else None, 3 * 2**20 if moved else None,
            2 if moved else None,
            escalations=(Escalation(900, EscalationStep.DOWNTIME, 60, "lagging"),) if moved
            else (),
            verification=Verification(True, True, 12, "ok", 40, level="lab",
                                      warnings=("a warning",)) if moved else None,
            guest_pause_ms=95 if moved else None,
        )  # fmt: skip
        self.store.finish(job_id, result)
        return FakeOutcome(result, FakeCheck(blocked))


# -- the API on a real port, and the CLI run here -----------------------------------------


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def line(self) -> str:
        """The one line of a failure on stderr."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vmferry: "), self.err
        assert "Traceback" not in self.err
        return lines[0]


@dataclass
class Served:
    url: str
    store: Store
    db_url: str
    tokens: dict[str, str]
    fake: ServiceLikeMigrate
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    def _run(self, args: tuple[str, ...]) -> Ran:
        self.capsys.readouterr()
        try:
            run(list(args))
            code = 0
        except SystemExit as ended:
            code = ended.code if isinstance(ended.code, int) else (0 if ended.code is None else 1)
        captured = self.capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    def local(self, *args: str) -> Ran:
        """``vmferry ARGS`` on the store itself."""
        self.monkeypatch.delenv("VMFERRY_URL", raising=False)
        self.monkeypatch.delenv("VMFERRY_TOKEN", raising=False)
        self.monkeypatch.setenv("VMFERRY_DB", self.db_url)
        return self._run(args)

    def remote(self, *args: str, who: str = "admin", token: str | None = None,
               url: str | None = None) -> Ran:  # fmt: skip
        """``vmferry ARGS`` through the server, as ``who`` (or with ``token``)."""
        self.monkeypatch.setenv("VMFERRY_URL", url or self.url)
        self.monkeypatch.setenv("VMFERRY_TOKEN", token or self.tokens[who])
        self.monkeypatch.setenv("VMFERRY_DB", UNUSABLE_DB)
        return self._run(args)


@pytest.fixture
def served(
    store: Store, db_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Served]:  # fmt: skip
    for name in ("t1", "t2"):
        store.add_host(Host(name, "test:///default", link_mbps=1000 if name == "t2" else None))
    tokens = {name: users.add_user(store, name, role, project)[1]
              for name, role, project in [("admin", "admin", None), ("ops", "operator", None),
                                          ("viewer", "viewer", None)]}  # fmt: skip
    fake = ServiceLikeMigrate(store)
    monkeypatch.setattr(migrate_cmd, "migrate_service", fake)  # the local command's move
    app = create_app(store, migrate=fake, event_poll_s=0.02)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", store, db_url, tokens, fake, capsys,
                     monkeypatch)  # fmt: skip
    finally:
        fake.stop.set()
        fake.slow_release.set()
        server.should_exit = True
        thread.join(30)


def same(served: Served, *args: str, who: str = "admin") -> Ran:
    """Run ``args`` here and through the server: the same stdout, stderr and exit code."""
    here, there = served.local(*args), served.remote(*args, who=who)
    assert (there.code, there.out, there.err) == (here.code, here.out, here.err)
    return here


def without_ids(text: str, *ids: str) -> str:
    for index, job_id in enumerate(ids):
        text = text.replace(job_id, f"JOB{index}")
    return text


# -- reads ----------------------------------------------------------------------------------


def test_hosts_list_is_the_same_through_the_server(served: Served) -> None:
    listed = same(served, "hosts", "list", "--json")
    assert [h["name"] for h in json.loads(listed.out)] == ["t1", "t2"]
    table = same(served, "hosts", "list")
    assert "test:///default" in table.out and "1000 Mbit/s" in table.out


@pytest.mark.parametrize("args", [(), ("--host", "t2")])
def test_inventory_is_the_same_through_the_server(served: Served, args: tuple[str, ...]) -> None:
    found = json.loads(same(served, "inventory", *args, "--json").out)
    expected = [("t2", "test")] if args else [("t1", "test"), ("t2", "test")]
    assert [(r["host"], r["spec"]["name"]) for r in found] == expected
    assert "test" in same(served, "inventory", *args).out


def test_inventory_of_an_unknown_or_unreachable_host_fails_the_same(served: Served) -> None:
    unknown = same(served, "inventory", "--host", "nope")
    assert unknown.code == 2 and "nope" in unknown.line()
    served.store.add_host(Host("t9", "test:///nonexistent/t9.xml"))
    down = same(served, "inventory", "--json")  # the others' VMs listed, the exit code 2
    assert down.code == 2 and "host 't9': cannot connect to libvirt" in down.line()
    assert down.line().endswith("(not listed: the VMs of the hosts that answered are)")
    assert [(r["host"], r["spec"]["name"]) for r in json.loads(down.out)] == [
        ("t1", "test"), ("t2", "test")]  # fmt: skip
    alone = same(served, "inventory", "--host", "t9", "--json")
    assert alone.code == 2 and "host 't9'" in alone.line() and alone.out == ""


def make_jobs(store: Store) -> list[str]:
    done = store.create_job("migrate", "web1", "t1", "t2", MigrationOptions())
    store.set_status(done.id, JobStatus.RUNNING)
    store.finish(done.id, MigrationResult(done.id, "web1", "t1", "t2", MigrationOptions().strategy,
                                          JobStatus.FAILED, "libvirt said no", None, None,
                                          None, 1))  # fmt: skip
    waiting = store.create_job("migrate", "db1", "t2", "t1", MigrationOptions(max_downtime_ms=50))
    store.add_event(waiting.id, "note", "a note", {"n": 1})
    return [done.id, waiting.id]


def test_jobs_and_job_show_are_the_same_through_the_server(served: Served) -> None:
    done, waiting = make_jobs(served.store)
    listed = json.loads(same(served, "jobs", "--json").out)
    assert [j["id"] for j in listed] == [waiting, done]
    assert same(served, "jobs", "--limit", "1", "--json").out.count('"id"') == 1
    assert "libvirt said no" in same(served, "jobs").out
    for job_id in (done, waiting):
        shown = json.loads(same(served, "job", "show", job_id, "--json").out)
        assert shown["id"] == job_id and shown["events"]
        assert job_id in same(served, "job", "show", job_id).out


def test_job_show_of_an_owned_job_says_the_server_keeps_its_lease(served: Served) -> None:
    job = served.store.create_job("migrate", "web1", "t1", "t2", MigrationOptions())
    served.store.set_owner(job.id, process_lease(served.store))
    here, there = served.local("job", "show", job.id), served.remote("job", "show", job.id)
    assert "holds its lease" in " ".join(here.out.split())
    assert (
        f"owner lease {job.owner_id or served.store.get_job(job.id).owner_id} (whether it "
        "still runs: the server does not say yet)" in " ".join(there.out.split())
    )

    def around_owner(out: str) -> tuple[list[str], list[str]]:  # the one row that differs
        lines = [line.rstrip() for line in out.splitlines()]  # its width pads the others
        owner = next(i for i, line in enumerate(lines) if line.startswith(" owner "))
        events = next(i for i, line in enumerate(lines) if line.strip() == "events")
        return lines[:owner], lines[events:]

    assert around_owner(there.out) == around_owner(here.out)
    assert same(served, "job", "show", job.id, "--json").code == 0


def test_audit_and_users_are_the_same_through_the_server(served: Served) -> None:
    served.remote("job", "cancel", make_jobs(served.store)[0])  # an audit row: jobs.cancel
    trail = json.loads(same(served, "audit", "--json").out)
    assert ("admin", "jobs.cancel", "ok") in [(e["user"], e["action"], e["result"])
                                              for e in trail]  # fmt: skip
    assert same(served, "audit", "--user", "admin", "--limit", "1", "--json").out.count(
        '"at"') == 1  # fmt: skip
    assert same(served, "audit", "--since", "1h", "--json").out == same(served, "audit",
                                                                        "--json").out  # fmt: skip
    assert "jobs.cancel" in same(served, "audit").out
    listed = json.loads(same(served, "users", "list", "--json").out)
    assert [u["name"] for u in listed] == ["admin", "ops", "viewer"]
    assert same(served, "users", "list").code == 0


# -- job cancel -------------------------------------------------------------------------


def held_move(served: Served, vm: str) -> str:
    """A fake move of ``vm`` running in a thread until cancelled; its job id."""
    made = threading.Event()
    ids: list[str] = []

    def on_job(job_id: str) -> None:
        ids.append(job_id)
        made.set()

    threading.Thread(target=served.fake, args=(vm, "t2", MigrationOptions()),
                     kwargs={"on_job": on_job}, daemon=True).start()  # fmt: skip
    assert made.wait(10)
    return ids[0]


def test_job_cancel_is_the_same_through_the_server(served: Served) -> None:
    here_id, there_id = held_move(served, "held1"), held_move(served, "held2")
    here = served.local("job", "cancel", here_id)
    there = served.remote("job", "cancel", there_id)
    assert (there.code, without_ids(there.out, there_id)) == (
        here.code,
        without_ids(here.out, here_id),
    )
    assert here.code == 0 and "cancelled" in here.out
    assert served.store.get_job(there_id).status is JobStatus.CANCELLED
    again = same(served, "job", "cancel", here_id)  # finished already: nothing more
    assert "had already finished" in again.out
    as_json = json.loads(same(served, "job", "cancel", there_id, "--json").out)
    assert (as_json["id"], as_json["status"]) == (there_id, "cancelled")


# -- migrate ----------------------------------------------------------------------------


@pytest.mark.parametrize(("vm", "code", "status"),
                         [("web1", 0, "completed"), ("broken", 4, "failed"),
                          ("blocked", 3, "failed")])  # fmt: skip
def test_migrate_json_is_the_same_through_the_server(served: Served, vm: str, code: int,
                                                     status: str) -> None:  # fmt: skip
    here = served.local("migrate", vm, "--to", "t2", "--json", "--max-downtime-ms", "200")
    there = served.remote("migrate", vm, "--to", "t2", "--json", "--max-downtime-ms", "200")
    mine, theirs = json.loads(here.out), json.loads(there.out)
    assert (here.code, mine["status"]) == (code, status)
    assert there.code == here.code
    assert mine["job_id"] != theirs["job_id"]  # two moves, two jobs
    assert {**theirs, "job_id": "J"} == {**mine, "job_id": "J"}
    if code:
        assert without_ids(there.err.splitlines()[-1], theirs["job_id"]) == without_ids(
            here.err.splitlines()[-1], mine["job_id"])  # fmt: skip
    job = served.store.get_job(theirs["job_id"])
    assert job.status.value == status and job.options.max_downtime_ms == 200
    assert "checks" in [e.kind for e in job.events]
    assert f"job {theirs['job_id']} in the vmferry server at {served.url}" in there.err


def test_migrate_text_is_the_same_through_the_server(served: Served) -> None:
    here = served.local("migrate", "web1", "--to", "t2")
    there = served.remote("migrate", "web1", "--to", "t2")
    here_id = re.search(r"job\s+(\w+)", here.out)
    there_id = re.search(r"job\s+(\w+)", there.out)
    assert here_id is not None and there_id is not None
    assert without_ids(there.out, there_id.group(1)) == without_ids(here.out, here_id.group(1))
    assert "memory integrity" in here.out and here.code == there.code == 0


def test_migrate_of_an_unknown_vm_fails_the_same(served: Served) -> None:
    here = served.local("migrate", "ghost", "--to", "t2", "--json")
    there = served.remote("migrate", "ghost", "--to", "t2", "--json")
    assert (there.code, there.out) == (here.code, here.out) == (2, "")
    # the local progress line "checking ghost -> t2" is the service's, not a job event
    assert there.line() == here.err.splitlines()[-1] == ("vmferry: no VM named 'ghost' on "
                                                         "the registered hosts")  # fmt: skip
    assert served.store.list_jobs() == []


def test_migrate_options_the_api_lacks_are_refused_not_dropped(served: Served) -> None:
    for extra in (["--strategy", "auto"], ["--tls"], ["--require-verification"]):
        refused = served.remote("migrate", "web1", "--to", "t2", *extra)
        assert refused.code == 2
        assert "has no remote form yet; unset VMFERRY_URL to run it locally" in refused.line()
    assert served.store.list_jobs() == []


def test_a_second_start_of_a_vm_while_its_first_is_starting_is_409(served: Served) -> None:
    first: list[httpx.Response] = []
    headers = {"Authorization": f"Bearer {served.tokens['ops']}"}

    def start() -> None:
        first.append(httpx.post(f"{served.url}/api/v1/migrations", headers=headers,
                                json={"vm": "slow", "to": "t2"}, timeout=60))  # fmt: skip

    starting = threading.Thread(target=start)
    starting.start()
    assert served.fake.slow_entered.wait(10), "the first start did not reach the move"
    conflict = served.remote("migrate", "slow", "--to", "t2", who="ops")
    served.fake.slow_release.set()
    assert conflict.code == 2 and conflict.out == ""
    assert conflict.line() == ("vmferry: a move of slow is being started through this server "
                               "already; see GET /api/v1/jobs")  # fmt: skip
    starting.join(30)
    assert first[0].status_code == 202


# -- errors -----------------------------------------------------------------------------


def test_a_bad_token_is_one_line_exit_2(served: Served) -> None:
    refused = served.remote("hosts", "list", token="vmf_000000000000_not-a-token")
    assert refused.code == 2 and refused.out == ""
    assert f"the vmferry server at {served.url} refused VMFERRY_TOKEN" in refused.line()
    served.monkeypatch.setenv("VMFERRY_URL", served.url)
    served.monkeypatch.delenv("VMFERRY_TOKEN")
    unset = served._run(("jobs",))
    assert unset.code == 2 and "VMFERRY_TOKEN is not" in unset.line()


def test_a_role_refusal_names_the_rule(served: Served) -> None:
    job_id = make_jobs(served.store)[1]
    refused = served.remote("job", "cancel", job_id, who="viewer")
    assert refused.code == 2
    assert "refused by the server's rule role.viewer.read-only" in refused.line()
    assert not served.store.get_job(job_id).cancel_requested
    assert served.remote("users", "list", who="ops").line().startswith(
        "vmferry: refused by the server's rule admin-only")  # fmt: skip


def test_unknown_job_is_the_same_404_as_locally(served: Served) -> None:
    for args in (("job", "show", "nope"), ("job", "cancel", "nope")):
        missing = same(served, *args)
        assert missing.code == 2 and "no job 'nope'" in missing.line()
    # an id with a slash reaches no route: Starlette's bare 404, the same exit code
    odd = served.remote("job", "show", "a/b?c")
    assert odd.code == served.local("job", "show", "a/b?c").code == 2
    assert odd.line() == "vmferry: the server has nothing at GET /api/v1/jobs/a%2Fb%3Fc (404)"


def test_malformed_input_is_exit_2_with_the_field(served: Served) -> None:
    here = served.local("audit", "--since", "yesterday")
    there = served.remote("audit", "--since", "yesterday")
    assert here.code == there.code == 2
    assert there.line().startswith("vmferry: query.since.datetime: Input should be a valid")


def test_a_server_that_is_not_there_is_one_line_exit_2(served: Served) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    refused = served.remote("jobs", url=closed)
    assert refused.code == 2
    assert refused.line() == (f"vmferry: cannot reach the vmferry server at {closed} "
                              "(VMFERRY_URL): connection refused; is `vmferry server` running "
                              "there?")  # fmt: skip
    bad = served.remote("jobs", url="ftp://example.invalid")
    assert bad.code == 2 and "not an http:// or https:// URL" in bad.line()


def test_commands_without_a_remote_form_are_refused_and_never_run_locally(served: Served) -> None:
    for args in (("hooks", "list"), ("hosts", "add", "t5", "test:///default"),
                 ("settings", "list"),
                 ("vm", "show", "web1")):  # fmt: skip
        refused = served.remote(*args)
        assert refused.code == 2 and refused.out == ""
        path = " ".join(args[:2])
        assert refused.line() == (f"vmferry: `vmferry {path}` has no remote form yet; unset "
                                  "VMFERRY_URL to run it locally")  # fmt: skip
    assert [h.name for h in served.store.list_hosts()] == ["t1", "t2"]
    assert served.remote("hosts", "add", "--help").code == 0  # help is always shown


def test_users_add_stays_local_in_remote_mode(served: Served) -> None:
    served.monkeypatch.setenv("VMFERRY_URL", served.url)
    served.monkeypatch.setenv("VMFERRY_TOKEN", served.tokens["admin"])
    served.monkeypatch.setenv("VMFERRY_DB", served.db_url)
    added = served._run(("users", "add", "newbie", "--role", "viewer"))
    assert added.code == 0 and added.out.startswith("vmf_")
    assert "newbie" in [u.name for u in users.list_users(served.store)]


# -- Ctrl-C: a real signal to a real `vmferry migrate` process --------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_cancels_the_move_in_the_server_as_it_does_here(served: Served) -> None:
    env = {**os.environ, "VMFERRY_URL": served.url, "VMFERRY_TOKEN": served.tokens["ops"],
           "VMFERRY_DB": UNUSABLE_DB}  # fmt: skip
    # as from a terminal: SIGINT handled even when this run was started where it is ignored
    # (a background job of a non-interactive shell, as in a nohup'd `make test`, passes
    # SIGINT ignored to its children, and Python then leaves it ignored)
    moving = subprocess.Popen([sys.executable, "-m", "vmferry.cli.main", "migrate", "held9",
                               "--to", "t2", "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=_default_sigint)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not [j for j in served.store.list_jobs() if j.status is JobStatus.RUNNING]:
            assert moving.poll() is None, moving.communicate()
            assert time.monotonic() < deadline, "the move did not start"
            time.sleep(0.05)
        time.sleep(0.3)  # following its events now
        moving.send_signal(signal.SIGINT)
        out, err = moving.communicate(timeout=30)
    finally:
        if moving.poll() is None:
            moving.kill()
    assert moving.returncode == 4, err  # as a local move Ctrl-C cancelled
    result = json.loads(out)
    assert (result["vm"], result["status"]) == ("held9", "cancelled")
    assert "asking the server to cancel job" in err
    assert err.strip().splitlines()[-1] == (f"vmferry: job {result['job_id']} cancelled: "
                                            "interrupted (Ctrl-C)")  # fmt: skip
    assert served.store.get_job(result["job_id"]).cancel_requested


# -- pieces -----------------------------------------------------------------------------


def test_local_commands_do_not_import_the_client() -> None:
    code = (
        "import sys\nfrom vmferry.cli import main\n"
        "for name in ('jobs', 'migrate', 'hosts', 'audit', 'users'):\n"
        "    main.build_app(main._command_named([name]))\n"
        "print(sorted(m for m in sys.modules if m == 'httpx' or m == 'vmferry.client.api'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "VMFERRY_URL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_every_remote_or_local_form_names_a_command() -> None:
    from vmferry.cli.main import _COMMANDS

    groups = {name for name, (_m, _a, group) in _COMMANDS.items() if group}
    for path in [*REMOTE_FORMS, *LOCAL_ALWAYS]:
        assert path.split()[0] in _COMMANDS or path == "worker", path
        assert command_path(path.split(), groups) in (path, path.split()[0])
    assert command_path(["--version"], groups) is None
    assert command_path(["job", "--help"], groups) == "job"
    assert command_path(["migrate", "web1", "--to", "t2"], groups) == "migrate"


@pytest.mark.parametrize(
    ("status", "body", "kind", "says"),
    [(401, {"detail": "the token is not valid"}, NotAuthenticatedError, "the token is not valid"),
     (403, {"detail": "no", "rule": "role.viewer.read-only"}, ForbiddenError,
      "rule role.viewer.read-only: no"),
     (404, {"detail": "no job 'x'"}, NotFoundError, "no job 'x'"),
     (409, {"detail": "in use"}, AlreadyExistsError, "in use"),
     (422, {"detail": [{"path": "body.to", "msg": "Field required"},
                       {"path": "", "msg": "vmferry's own"}]}, BadInputError,
      "body.to: Field required; vmferry's own"),
     (502, {"detail": "host 'k': down"}, HostUnreachableError, "host 'k': down"),
     (500, {"detail": "internal error (KeyError)"}, ServerError, "failed (500): internal"),
     (504, {"detail": "its job did not appear"}, ServerError, "failed (504)"),
     (503, None, ServerError, "no detail")],
)  # fmt: skip
def test_each_status_is_the_error_of_the_local_failure(
    status: int, body: Any, kind: type[Exception], says: str
) -> None:
    error = error_for(status, body, "http://s")
    assert type(error) is kind and says in error.message
    assert "\n" not in error.message
    assert error.exit_code == (1 if status >= 500 and status != 502 else 2)


def test_server_sent_events_are_parsed() -> None:
    stream = [": ping", "", "event: created", 'data: {"a": 1}', "id: 0", "",
              "data: one", "data: two", "", "event: end", "data: {}"]  # fmt: skip
    found = list(parse_sse(stream))
    assert [(m.event, m.data, m.id) for m in found] == [
        ("created", '{"a": 1}', "0"),
        ("message", "one\ntwo", None),
        ("end", "{}", None),
    ]


def test_a_dropped_event_stream_is_resumed_after_the_last_event() -> None:
    event = {"at": "2026-12-04T08:00:00Z", "kind": "status", "message": "m", "data": {}}
    job = {"id": "j1", "kind": "migrate", "vm": "v", "source": "a", "destination": "b",
           "status": "completed", "created_at": "x", "updated_at": "y",
           "options": to_jsonable(MigrationOptions()), "reason": None, "result": None}  # fmt: skip
    asked: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:  # two events, then the connection ends early
            body = "".join(f"event: status\ndata: {json.dumps(event)}\nid: {i}\n\n"
                           for i in range(2))  # fmt: skip
        else:
            body = (f"event: status\ndata: {json.dumps(event)}\nid: 2\n\n"
                    f"event: end\ndata: {json.dumps(job)}\n\n")  # fmt: skip
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    api = ApiClient("http://s/api/v1/", "t", transport=httpx.MockTransport(answer))
    seen: list[str] = []
    follower = JobFollower(api, "j1", lambda e: seen.append(e.message), sleep=lambda _s: None)
    ended = follower.run()
    assert asked == [None, "1"]
    assert (ended.id, ended.status, len(seen), follower.last_id) == ("j1", JobStatus.COMPLETED,
                                                                     3, 2)  # fmt: skip
