"""Hooks (docs/hooks.md): the pure model, webhooks against a real HTTP server on
127.0.0.1 (the signature checked with an HMAC computed here), exec hooks (stdin, output,
timeout killing the process group), what each phase's failures mean, the store on SQLite
and PostgreSQL, the plan file's ``hooks:``, plan runs handing them to migrate, and the
`vmferry hooks` commands."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vmferry.errors import AlreadyExistsError, BadInputError, NotFoundError
from vmferry.model import Host
from vmferry.model.hook import (
    Hook,
    HookKind,
    HookPhase,
    HookResult,
    HookSpecError,
    backoff_s,
    make_hook,
    merge_hooks,
    phase_outcome,
    retriable,
    shown_target,
    signature,
)
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult
from vmferry.plan.schema import parse_plan, plan_hooks
from vmferry.service import hooks as hooks_service
from vmferry.service.hooks import (
    PostHookWitness,
    after_failure,
    before_move,
    hooks_for,
    job_document,
    run_hooks,
    with_post_hooks,
)
from vmferry.store import hooks as hooks_store
from vmferry.store.db import Store, open_store
from vmferry.verify.witness import NoWitness, verification

SECRET = "s3cr3t-for-tests"
ENV = {"VMFERRY_HOOK_SECRET_T": SECRET, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


# -- the pure model ------------------------------------------------------------------------


def test_a_webhook_gets_two_retries_and_an_exec_hook_none_by_default() -> None:
    web = make_hook("lb", "pre-migrate", url="https://lb.example/drain", secret_env="X_SECRET")
    assert (web.kind, web.retries, web.timeout_s) == (HookKind.WEBHOOK, 2, 10.0)
    run = make_hook("smoke", "post-migrate", exec_path="/usr/bin/true", required=True)
    assert (run.kind, run.retries, run.required, run.secret_env) == (HookKind.EXEC, 0, True, None)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"name": "bad name"}, "hook name 'bad name'"),
        ({"phase": "after"}, "unknown phase 'after'"),
        ({"url": None}, "exactly one of"),
        ({"exec_path": "/bin/true"}, "exactly one of"),
        ({"timeout_s": 0}, "timeout 0 s"),
        ({"timeout_s": float("nan")}, "timeout nan s"),
        ({"timeout_s": 601}, "at most 600 s"),
        ({"url": "ftp://x/y"}, "must be http:// or https://"),
        ({"url": "https://user:pw@x/y"}, "carries credentials"),
        ({"url": "https://x:99999/"}, "URL 'https://x:99999/'"),
        ({"secret_env": None}, "a webhook is signed"),
        ({"secret_env": "lower"}, "must be an environment variable name"),
        ({"retries": 11}, "retries must be 0 to 10"),
        ({"required": True}, "required applies to post-migrate hooks"),
    ],
)
def test_a_bad_hook_is_one_line_naming_the_problem(kwargs: dict[str, Any], says: str) -> None:
    args: dict[str, Any] = {"name": "h", "phase": "pre-migrate", "url": "https://x/y",
                            "secret_env": "S"} | kwargs  # fmt: skip
    name, phase = args.pop("name"), args.pop("phase")
    with pytest.raises(HookSpecError) as caught:
        make_hook(name, phase, **args)
    assert says in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"exec_path": "bin/true"}, "must be an absolute path"),
        ({"exec_path": "/bin/true", "secret_env": "S"}, "an exec hook takes none"),
        ({"exec_path": "/bin/true", "retries": 1}, "an exec hook runs once"),
    ],
)
def test_a_bad_exec_hook_is_refused(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(HookSpecError, match=says):
        make_hook("h", "post-migrate", **kwargs)


def test_signature_retry_rule_backoff_and_shown_target() -> None:
    body = b'{"id":"1"}'
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature(b"k", body) == f"sha256={expected}"
    assert [retriable(s, False) for s in (200, 301, 400, 404, 429, 500, 503, 599)] == [
        False, False, False, False, False, True, True, True,
    ]  # fmt: skip
    assert retriable(None, True) and not retriable(None, False)
    assert [backoff_s(n) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    hook = make_hook("h", "pre-migrate", url="https://x/drain?token=abc", secret_env="S")
    assert shown_target(hook) == "https://x/drain?..."


def _result(hook: Hook, ok: bool) -> HookResult:
    return HookResult(hook, ok, 1, "ok" if ok else "exit 1")


def test_what_a_phase_failure_means() -> None:
    pre = make_hook("a", "pre-migrate", exec_path="/x")
    post = make_hook("b", "post-migrate", exec_path="/x")
    post_required = make_hook("c", "post-migrate", exec_path="/x", required=True)
    failure = make_hook("d", "on-failure", exec_path="/x")
    blocked = phase_outcome(HookPhase.PRE_MIGRATE, [_result(pre, False)])
    assert not blocked.passed
    assert blocked.reason == "blocked by pre-migrate hook: pre-migrate hook a failed: exit 1"
    assert phase_outcome(HookPhase.PRE_MIGRATE, [_result(pre, True)]).passed
    warned = phase_outcome(HookPhase.POST_MIGRATE, [_result(post, False),
                                                   _result(post_required, True)])  # fmt: skip
    assert warned.passed and warned.warnings == ("post-migrate hook b failed: exit 1",)
    failed = phase_outcome(HookPhase.POST_MIGRATE, [_result(post_required, False)])
    assert not failed.passed
    assert failed.problems == ("post-migrate hook c failed: exit 1 (required)",)
    recorded = phase_outcome(HookPhase.ON_FAILURE, [_result(failure, False)])
    assert recorded.passed and recorded.warnings and recorded.reason is None


def test_a_narrower_hook_replaces_a_broader_one_of_its_name_in_its_place() -> None:
    a = make_hook("a", "pre-migrate", exec_path="/plan/a")
    b = make_hook("b", "post-migrate", exec_path="/plan/b")
    b_own = make_hook("b", "on-failure", exec_path="/vm/b")
    c = make_hook("c", "pre-migrate", exec_path="/vm/c")
    assert merge_hooks([a, b], [b_own, c]) == (a, b_own, c)


# -- a real HTTP receiver -------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering each POST with the next status of ``answers``
    (the last one again when they run out), after ``delay_s``."""

    answers: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(state.delay_s)
            n = len(state.received) - 1
            status = state.answers[min(n, len(state.answers) - 1)]
            reply = b"" if status == 204 else f"answer {n + 1}".encode()
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def log_message(self, *_args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'hooks.db'}") as opened:
        for name in ("kvm1", "kvm2"):
            opened.add_host(Host(name, f"qemu+tls://{name}/system"))
        yield opened


def new_job(store: Store, vm: str = "web1") -> str:
    return store.create_job("migrate", vm, "kvm1", "kvm2", MigrationOptions()).id


def hook_events(store: Store, job_id: str) -> list[dict[str, Any]]:
    return [dict(e.data) | {"message": e.message}
            for e in store.get_job(job_id).events if e.kind == "hook"]  # fmt: skip


def webhook(url: str, phase: str = "pre-migrate", **kwargs: Any) -> Hook:
    return make_hook("notify", phase, url=url, secret_env="VMFERRY_HOOK_SECRET_T", **kwargs)


def test_a_webhook_posts_the_job_json_signed_with_hmac_sha256(
    sqlite_store: Store, receiver: Receiver
) -> None:
    receiver.answers = [202]
    job_id = new_job(sqlite_store)
    document = job_document(sqlite_store, job_id)
    outcome = run_hooks(sqlite_store, job_id, HookPhase.PRE_MIGRATE, [webhook(receiver.url)],
                        document, environ=ENV)  # fmt: skip
    assert outcome.passed and outcome.results[0].summary == "ok (HTTP 202)"
    [(headers, body)] = receiver.received
    assert json.loads(body) == document and document["id"] == job_id
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()  # computed here
    assert headers["x-vmferry-signature"] == f"sha256={mac}"
    assert headers["x-vmferry-event"] == "pre-migrate"
    assert headers["x-vmferry-hook"] == "notify"
    assert headers["content-type"] == "application/json"
    [event] = hook_events(sqlite_store, job_id)
    assert (event["result"], event["status_code"], event["attempt"]) == ("ok", 202, 1)
    assert event["delivery"] == headers["x-vmferry-delivery"] and len(event["delivery"]) == 32
    assert event["output"] == "answer 1" and event["duration_ms"] >= 0
    assert SECRET not in json.dumps(job_document(sqlite_store, job_id))  # never recorded


def test_a_5xx_is_tried_again_with_the_same_delivery_until_it_succeeds(
    sqlite_store: Store, receiver: Receiver
) -> None:
    receiver.answers = [500, 503, 200]
    job_id = new_job(sqlite_store)
    outcome = run_hooks(sqlite_store, job_id, HookPhase.PRE_MIGRATE, [webhook(receiver.url)],
                        {"id": job_id}, environ=ENV, backoff_base_s=0.01)  # fmt: skip
    assert outcome.passed and outcome.results[0].attempts == 3
    assert outcome.results[0].summary == "ok (HTTP 200) after 3 attempts"
    assert len({h["x-vmferry-delivery"] for h, _ in receiver.received}) == 1
    events = hook_events(sqlite_store, job_id)
    assert [(e["result"], e["status_code"], e["attempt"]) for e in events] == [
        ("retrying", 500, 1), ("retrying", 503, 2), ("ok", 200, 3),
    ]  # fmt: skip
    assert "trying again (attempt 1 of 3)" in events[0]["message"]


def test_retries_stop_when_spent(sqlite_store: Store, receiver: Receiver) -> None:
    receiver.answers = [502]
    job_id = new_job(sqlite_store)
    outcome = run_hooks(sqlite_store, job_id, HookPhase.PRE_MIGRATE,
                        [webhook(receiver.url, retries=1)], {}, environ=ENV,
                        backoff_base_s=0.01)  # fmt: skip
    assert not outcome.passed and len(receiver.received) == 2
    assert outcome.results[0].summary == "HTTP 502 after 2 attempts"
    assert [e["result"] for e in hook_events(sqlite_store, job_id)] == ["retrying", "failed"]


def test_a_4xx_fails_at_once_without_a_retry(sqlite_store: Store, receiver: Receiver) -> None:
    receiver.answers = [403, 204]
    job_id = new_job(sqlite_store)
    outcome = run_hooks(sqlite_store, job_id, HookPhase.PRE_MIGRATE, [webhook(receiver.url)],
                        {}, environ=ENV, backoff_base_s=0.01)  # fmt: skip
    assert not outcome.passed and len(receiver.received) == 1
    assert outcome.reason == "blocked by pre-migrate hook: pre-migrate hook notify failed: HTTP 403"
    [event] = hook_events(sqlite_store, job_id)
    assert (event["result"], event["status_code"]) == ("failed", 403)


def test_a_receiver_slower_than_the_timeout_fails_once(
    sqlite_store: Store, receiver: Receiver
) -> None:
    receiver.delay_s = 3.0
    job_id = new_job(sqlite_store)
    started = time.monotonic()
    outcome = run_hooks(sqlite_store, job_id, HookPhase.PRE_MIGRATE,
                        [webhook(receiver.url, timeout_s=0.3)], {}, environ=ENV,
                        backoff_base_s=0.01)  # fmt: skip
    assert time.monotonic() - started < 2.5
    assert not outcome.passed and len(receiver.received) == 1  # it may have acted: no retry
    assert outcome.results[0].summary.startswith("no answer within 0.3 s (ReadTimeout)")


def test_a_refused_connection_is_tried_again(sqlite_store: Store) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job_id = new_job(sqlite_store)
    outcome = run_hooks(sqlite_store, job_id, HookPhase.PRE_MIGRATE,
                        [webhook(f"http://127.0.0.1:{port}/", retries=2)], {}, environ=ENV,
                        backoff_base_s=0.01)  # fmt: skip
    assert not outcome.passed and outcome.results[0].attempts == 3
    events = hook_events(sqlite_store, job_id)
    assert [e["result"] for e in events] == ["retrying", "retrying", "failed"]
    assert events[-1]["error"].startswith("could not connect")


def test_a_webhook_whose_secret_is_not_set_is_not_sent(
    sqlite_store: Store, receiver: Receiver
) -> None:
    job_id = new_job(sqlite_store)
    outcome = run_hooks(sqlite_store, job_id, HookPhase.PRE_MIGRATE, [webhook(receiver.url)],
                        {}, environ={})  # fmt: skip
    assert not outcome.passed and receiver.received == []
    assert "VMFERRY_HOOK_SECRET_T (its secret) is not set" in outcome.problems[0]


# -- exec hooks -----------------------------------------------------------------------------


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


def test_an_exec_hook_reads_the_job_json_and_its_output_is_kept(
    sqlite_store: Store, tmp_path: Path
) -> None:
    got = tmp_path / "stdin.json"
    path = script(tmp_path, "hook.sh", f'cat > {got}\necho "phase $VMFERRY_HOOK_PHASE job '
                  '$VMFERRY_JOB_ID vm $VMFERRY_VM"\necho careful >&2\n'
                  'test -z "$VMFERRY_HOOK_SECRET_T" || echo LEAKED\n')  # fmt: skip
    job_id = new_job(sqlite_store)
    hook = make_hook("check", "post-migrate", exec_path=path)
    document = job_document(sqlite_store, job_id)
    outcome = run_hooks(sqlite_store, job_id, HookPhase.POST_MIGRATE, [hook], document,
                        environ=ENV)  # fmt: skip
    assert outcome.passed
    assert json.loads(got.read_text()) == document
    [event] = hook_events(sqlite_store, job_id)
    assert event["output"] == f"phase post-migrate job {job_id} vm web1\n"
    assert (event["stderr"], event["exit_code"], event["result"]) == ("careful\n", 0, "ok")
    assert event["message"].startswith("post-migrate hook check (exec): ok (exit 0) in ")


def test_an_exec_hooks_output_is_bounded(sqlite_store: Store, tmp_path: Path) -> None:
    path = script(tmp_path, "loud.sh", "head -c 200000 /dev/zero | tr '\\0' x\n")
    job_id = new_job(sqlite_store)
    run_hooks(sqlite_store, job_id, HookPhase.ON_FAILURE,
              [make_hook("loud", "on-failure", exec_path=path)], {}, environ=ENV)  # fmt: skip
    [event] = hook_events(sqlite_store, job_id)
    assert event["output"].startswith("x" * 65536)
    assert event["output"].endswith("[vmferry: 134464 more bytes not kept]")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_an_exec_hook_past_its_timeout_is_killed_with_its_children(
    sqlite_store: Store, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    path = script(tmp_path, "slow.sh", f"sleep 60 &\necho $$ $! > {pids}\nwait\n")
    job_id = new_job(sqlite_store)
    started = time.monotonic()
    outcome = run_hooks(sqlite_store, job_id, HookPhase.PRE_MIGRATE,
                        [make_hook("slow", "pre-migrate", exec_path=path, timeout_s=0.5)], {},
                        environ=ENV)  # fmt: skip
    assert time.monotonic() - started < 5
    assert not outcome.passed
    assert "did not finish within 0.5 s: its process group killed" in outcome.problems[0]
    shell, child = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 5
    while not (_gone(shell) and _gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(shell) and _gone(child)
    [event] = hook_events(sqlite_store, job_id)
    assert event["exit_code"] == -15  # SIGTERM, sent to the group


def test_an_executable_that_cannot_run_fails_the_hook(sqlite_store: Store, tmp_path: Path) -> None:
    job_id = new_job(sqlite_store)
    outcome = run_hooks(sqlite_store, job_id, HookPhase.PRE_MIGRATE,
                        [make_hook("gone", "pre-migrate", exec_path=str(tmp_path / "none"))],
                        {}, environ=ENV)  # fmt: skip
    assert not outcome.passed and "cannot run" in outcome.problems[0]


# -- phases around a move -------------------------------------------------------------------


def test_a_failing_pre_hook_blocks_the_move_and_the_next_ones_do_not_run(
    sqlite_store: Store, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    hooks = [
        make_hook("ok", "pre-migrate", exec_path=script(tmp_path, "ok.sh", "exit 0\n")),
        make_hook("no", "pre-migrate", exec_path=script(tmp_path, "no.sh",
                                                        "echo replica lagging; exit 3\n")),
        make_hook("later", "pre-migrate", exec_path=script(tmp_path, "later.sh",
                                                           f"touch {ran}\n")),
        make_hook("after", "post-migrate", exec_path=script(tmp_path, "after.sh",
                                                            f"touch {ran}\n")),
    ]  # fmt: skip
    job_id = new_job(sqlite_store)
    reason = before_move(sqlite_store, job_id, hooks)
    assert reason == "blocked by pre-migrate hook: pre-migrate hook no failed: exit 3"
    assert not ran.exists()
    events = hook_events(sqlite_store, job_id)
    assert [(e["hook"], e["result"]) for e in events] == [
        ("ok", "ok"), ("no", "failed"), ("later", "skipped"),
    ]  # fmt: skip
    assert events[1]["output"] == "replica lagging\n"
    assert before_move(sqlite_store, new_job(sqlite_store, "web2"), hooks[:1]) is None


def test_a_failing_required_post_hook_fails_the_verification(
    sqlite_store: Store, tmp_path: Path
) -> None:
    fail = script(tmp_path, "fail.sh", "echo smoke test failed >&2; exit 1\n")
    required = make_hook("smoke", "post-migrate", exec_path=fail, required=True)
    optional = make_hook("notify", "post-migrate", exec_path=fail)
    job_id = new_job(sqlite_store)
    witness = with_post_hooks(NoWitness(), sqlite_store, job_id, [required, optional])
    witness.start()
    report = witness.finish(True)
    assert report.problems == ("post-migrate hook smoke failed: exit 1 (required)",)
    assert report.warnings == ("post-migrate hook notify failed: exit 1",)
    checked = verification(report, running_on_destination=True, absent_on_source=True,
                           problems=[], require=False)  # fmt: skip
    assert not checked.passed and checked.problems == report.problems
    # an optional hook's failure alone is recorded, and the verification holds
    alone = PostHookWitness(sqlite_store, job_id, [optional]).finish(True)
    assert verification(alone, running_on_destination=True, absent_on_source=True,
                        problems=[], require=False).passed  # fmt: skip
    # a move that did not happen runs no post-migrate hook
    before = len(hook_events(sqlite_store, job_id))
    assert PostHookWitness(sqlite_store, job_id, [required]).finish(False).problems == ()
    assert len(hook_events(sqlite_store, job_id)) == before
    assert with_post_hooks(witness, sqlite_store, job_id, []) is witness


def test_on_failure_hooks_run_only_for_a_job_that_did_not_complete(
    sqlite_store: Store, tmp_path: Path
) -> None:
    got = tmp_path / "got.json"
    hooks = [make_hook("page", "on-failure", exec_path=script(tmp_path, "page.sh",
                                                              f"cat > {got}\n"))]  # fmt: skip

    def finished(status: JobStatus) -> str:
        job_id = new_job(sqlite_store)
        sqlite_store.set_status(job_id, JobStatus.RUNNING)
        sqlite_store.finish(job_id, MigrationResult(job_id, "web1", "kvm1", "kvm2",
                                                    MigrationOptions().strategy, status, "why",
                                                    None, None, None, None))  # fmt: skip
        return job_id

    assert after_failure(sqlite_store, finished(JobStatus.COMPLETED), hooks) is None
    assert after_failure(sqlite_store, new_job(sqlite_store, "web2"), hooks) is None  # running
    assert not got.exists()
    failed = finished(JobStatus.FAILED)
    outcome = after_failure(sqlite_store, failed, hooks)
    assert outcome is not None and outcome.passed
    assert json.loads(got.read_text())["status"] == "failed"


# -- the store (SQLite and PostgreSQL) -----------------------------------------------------


def test_a_vms_hooks_round_trip_through_the_store(store: Store) -> None:
    pre = hooks_service.add_hook(store, "web1", "drain", "pre-migrate",
                                 url="https://lb.example/drain", secret_env="LB_SECRET",
                                 timeout_s=2.5, retries=4)  # fmt: skip
    post = hooks_service.add_hook(store, "web1", "smoke", "post-migrate",
                                  exec_path="/usr/local/bin/smoke", required=True)  # fmt: skip
    other = hooks_service.add_hook(store, "db1", "page", "on-failure", exec_path="/bin/page")
    assert hooks_store.vm_hooks(store, "web1") == (pre, post)
    assert pre == Hook("drain", HookPhase.PRE_MIGRATE, HookKind.WEBHOOK,
                       "https://lb.example/drain", 2.5, 4, False, "LB_SECRET")  # fmt: skip
    assert hooks_service.list_hooks(store) == {"db1": (other,), "web1": (pre, post)}
    assert hooks_service.list_hooks(store, "nothing") == {"nothing": ()}
    with pytest.raises(AlreadyExistsError, match="web1 has a hook named 'drain' already"):
        hooks_service.add_hook(store, "web1", "drain", "on-failure", exec_path="/bin/x")
    plan_drain = make_hook("drain", "pre-migrate", exec_path="/plan/drain")
    plan_only = make_hook("announce", "pre-migrate", exec_path="/plan/announce")
    assert hooks_for(store, "web1", [plan_drain, plan_only]) == (pre, plan_only, post)
    hooks_service.remove_hook(store, "web1", "drain")
    assert hooks_store.vm_hooks(store, "web1") == (post,)
    with pytest.raises(NotFoundError, match="web1 has no hook named 'drain'"):
        hooks_service.remove_hook(store, "web1", "drain")


def test_a_bad_hook_writes_nothing(store: Store) -> None:
    with pytest.raises(BadInputError, match="hook x: give exactly one of"):
        hooks_service.add_hook(store, "web1", "x", "pre-migrate")
    with pytest.raises(BadInputError, match="VM name"):
        hooks_service.add_hook(store, "web 1", "x", "pre-migrate", exec_path="/bin/true")
    assert hooks_service.list_hooks(store) == {}


# -- plans ----------------------------------------------------------------------------------

PLAN = """version: 1
hooks:
  - {name: announce, phase: pre-migrate, url: "https://chat.example/in", secret_env: CHAT_KEY}
  - {name: smoke, phase: post-migrate, exec: /opt/smoke, required: true, timeout_s: 30}
hosts:
  - {name: kvm1, cpus: 8, memory_mb: 8192}
  - {name: kvm2, cpus: 8, memory_mb: 8192}
vms:
  - name: web1
    source: kvm1
    destination: kvm2
    memory_mb: 1024
    vcpus: 1
    hooks:
      - {name: smoke, phase: post-migrate, exec: /opt/web-smoke, required: true}
  - {name: db1, source: kvm1, destination: kvm2, memory_mb: 1024, vcpus: 1}
"""


def test_a_plan_declares_hooks_for_all_its_vms_and_for_one() -> None:
    spec = parse_plan(PLAN)
    web = plan_hooks(spec, "web1")
    assert [(h.name, h.target) for h in web] == [
        ("announce", "https://chat.example/in"), ("smoke", "/opt/web-smoke"),
    ]  # fmt: skip
    db = plan_hooks(spec, "db1")
    assert [(h.name, h.target, h.timeout_s, h.required) for h in db][1] == (
        "smoke", "/opt/smoke", 30.0, True,
    )  # fmt: skip
    assert db[0].retries == 2 and db[0].secret_env == "CHAT_KEY"


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("secret_env: CHAT_KEY}", "}", "plan.yaml:3: hooks[0]: hook announce: a webhook is signed"),
        ("phase: post-migrate, exec: /opt/smoke", "phase: after, exec: /opt/smoke",
         "plan.yaml:4: hooks[1].phase: Input should be"),
        ("exec: /opt/web-smoke, required: true}", "exec: /opt/web-smoke, requird: true}",
         "plan.yaml:15: vms[0].hooks[0].requird: unknown key"),
        ("    hooks:\n", "    hooks:\n      - {name: smoke, phase: on-failure, exec: /x}\n",
         "plan.yaml:16: vms[0].hooks[1].name: hook 'smoke' is listed twice"),
    ],
)  # fmt: skip
def test_a_bad_plan_hook_names_its_line(old: str, new: str, says: str) -> None:
    assert old in PLAN
    with pytest.raises(BadInputError) as caught:
        parse_plan(PLAN.replace(old, new, 1))
    assert says in str(caught.value), str(caught.value)


def test_a_plan_run_hands_its_hooks_to_migrate(tmp_path: Path) -> None:
    from vmferry.service.lease import process_lease
    from vmferry.service.migrate import MigrateOutcome
    from vmferry.service.plan import create_plan
    from vmferry.service.plan_run import run_plan

    handed: dict[str, tuple[Hook, ...] | None] = {}

    def migrate(vm: str, to: str, options: MigrationOptions, *, on_progress: Any, note: Any,
                plan_hooks: tuple[Hook, ...] | None = None) -> MigrateOutcome:  # fmt: skip
        handed[vm] = plan_hooks
        lease = process_lease(store)
        job = store.create_job("migrate", vm, "kvm1", to, options, owner_id=lease.owner_id,
                               owner_pid=lease.pid,
                               owner_start_ticks=lease.start_ticks)  # fmt: skip
        store.set_status(job.id, JobStatus.RUNNING)
        result = MigrationResult(job.id, vm, "kvm1", to, options.strategy, JobStatus.COMPLETED,
                                 None, 1000, 10, 1, 1)  # fmt: skip
        store.finish(job.id, result)
        return MigrateOutcome(result, None)  # type: ignore[arg-type]

    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    with open_store(f"sqlite:///{tmp_path / 'plans.db'}") as store:
        record = create_plan(path, store=store, measure=lambda _s, _st: ({}, {}))
        done = run_plan(record.id, store=store, migrate_fn=migrate, poll_s=0.01)
    assert str(done.status) == "completed"
    assert handed.keys() == {"web1", "db1"}
    assert [h.target for h in handed["web1"] or ()] == ["https://chat.example/in",
                                                        "/opt/web-smoke"]  # fmt: skip
    assert [h.target for h in handed["db1"] or ()] == ["https://chat.example/in", "/opt/smoke"]


# -- the command line -----------------------------------------------------------------------


def vmferry(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VMFERRY_DB": f"sqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def listed(db: Path, *vm: str) -> list[dict[str, Any]]:
    done = vmferry("hooks", "list", *vm, "--json", db=db)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def test_hooks_add_list_remove(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    added = vmferry("hooks", "add", "web1", "drain", "--phase", "pre-migrate", "--url",
                    "https://lb.example/drain", "--secret-env", "VMFERRY_HOOK_SECRET_LB",
                    "--timeout", "5", "--retries", "3", db=db)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout == "web1: pre-migrate hook drain (webhook) added\n"
    smoke = vmferry("hooks", "add", "web1", "smoke", "--phase", "post-migrate", "--exec",
                    "/usr/local/bin/smoke", "--required", "--json", db=db)  # fmt: skip
    assert smoke.returncode == 0, smoke.stderr
    assert json.loads(smoke.stdout)["required"] is True
    assert vmferry("hooks", "add", "db1", "page", "--phase", "on-failure", "--exec", "/bin/page",
                   db=db).returncode == 0  # fmt: skip
    assert listed(db, "web1") == [
        {"vm": "web1", "name": "drain", "phase": "pre-migrate", "kind": "webhook",
         "target": "https://lb.example/drain", "timeout_s": 5.0, "retries": 3,
         "required": False, "secret_env": "VMFERRY_HOOK_SECRET_LB"},
        {"vm": "web1", "name": "smoke", "phase": "post-migrate", "kind": "exec",
         "target": "/usr/local/bin/smoke", "timeout_s": 10.0, "retries": 0, "required": True,
         "secret_env": None},
    ]  # fmt: skip
    assert [(r["vm"], r["name"]) for r in listed(db)] == [
        ("db1", "page"), ("web1", "drain"), ("web1", "smoke"),
    ]  # fmt: skip
    table = vmferry("hooks", "list", db=db)
    assert table.returncode == 0 and "drain" in table.stdout
    removed = vmferry("hooks", "remove", "web1", "drain", db=db)
    assert removed.returncode == 0 and removed.stdout == "web1: hook drain removed\n"
    assert [r["name"] for r in listed(db, "web1")] == ["smoke"]
    with open_store(f"sqlite:///{db}") as store:
        from vmferry.service import audit

        actions = [(e.action, e.target) for e in audit.entries(store)]
    assert actions == [("hooks.add", "web1"), ("hooks.add", "web1"), ("hooks.add", "db1"),
                       ("hooks.remove", "web1")]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--phase", "later", "--exec", "/bin/true"], "unknown phase 'later'"),
        (["--phase", "pre-migrate"], "give exactly one of a URL"),
        (["--phase", "pre-migrate", "--url", "https://x/", "--exec", "/bin/true"],
         "give exactly one of"),
        (["--phase", "pre-migrate", "--url", "https://x/"], "a webhook is signed"),
        (["--phase", "pre-migrate", "--exec", "true"], "must be an absolute path"),
        (["--phase", "pre-migrate", "--exec", "/bin/true", "--required"],
         "required applies to post-migrate hooks"),
        (["--phase", "pre-migrate", "--exec", "/bin/true", "--timeout", "0"], "timeout 0 s"),
    ],
)  # fmt: skip
def test_bad_hook_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, args: list[str], says: str
) -> None:
    db = tmp_path / "cli.db"
    done = vmferry("hooks", "add", "web1", "h", *args, db=db)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmferry: ") and says in lines[0], lines
    assert done.stdout == ""
    assert listed(db) == []


def test_removing_a_hook_a_vm_lacks_is_exit_2(tmp_path: Path) -> None:
    done = vmferry("hooks", "remove", "web1", "none", db=tmp_path / "cli.db")
    assert done.returncode == 2
    assert done.stderr == "vmferry: web1 has no hook named 'none'; `vmferry hooks list web1` " \
                          "lists its hooks\n"  # fmt: skip
