"""A typed client of vmferry's API (``/api/v1``, docs/server.md) on httpx, for the command
line's remote mode.

``ApiClient.from_env()`` talks to VMFERRY_URL with ``Authorization: Bearer
$VMFERRY_TOKEN``. Answers come back as vmferry's model types, decoded as the store decodes
its own JSON (:func:`vmferry.store.codec.from_jsonable`), so a command prints them with the
code it prints local results with. Every failure is one :class:`~vmferry.errors.VmferryError`
whose exit code is the one the local command has for the same failure (:func:`error_for`):

====================================  =============================================  ====
what happened                         error                                          exit
====================================  =============================================  ====
refused, unknown name, timed out      ServerUnreachableError                         2
401 (VMFERRY_TOKEN wrong or unset)    NotAuthenticatedError                          2
403 (a role rule)                     ForbiddenError, naming the rule                2
404 / 409                             NotFoundError / AlreadyExistsError             2
422 (each bad field's path), 413      BadInputError                                  2
502 (a libvirt host did not answer)   HostUnreachableError                           2
other 5xx                             ServerError                                    1
====================================  =============================================  ====
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx

from vmferry.client.remote import TOKEN_ENV, URL_ENV
from vmferry.errors import (
    AlreadyExistsError,
    BadInputError,
    ForbiddenError,
    HostUnreachableError,
    NotAuthenticatedError,
    NotFoundError,
    ServerError,
    ServerUnreachableError,
    VmferryError,
)
from vmferry.model import Host, VmRecord, VmSpec, VmState
from vmferry.model.account import AuditEntry, User
from vmferry.model.migration import Job, JobEvent
from vmferry.store.codec import DecodeError, from_jsonable

__all__ = [
    "API_PREFIX",
    "ApiClient",
    "Cancel",
    "Inventory",
    "JobFollower",
    "SseMessage",
    "error_for",
    "parse_sse",
]

API_PREFIX = "/api/v1"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# POST /migrations answers once the move's job exists: after its pre-flight checks, which
# the server waits up to 180 s for (server/moves.py)
START_S = 240.0
START_TIMEOUT = httpx.Timeout(START_S, connect=5.0)
# an event stream is silent while nothing happens, but the server sends a ping every 15 s
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# POST /jobs/{id}/resume waits up to 60 s while libvirt still migrates the VM
RESUME_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
PAGE = 1000  # the most GET /vms gives at once
FOLLOW_RETRIES = 5
SERVER_PLAN_NAME = "plan.yaml"  # the name the server gives the plan file it is sent

T = TypeVar("T")


@dataclass(frozen=True)
class Inventory:
    """The server's inventory: the VMs of the hosts that answered, and those that did not."""

    records: list[VmRecord]
    unreachable: dict[str, str]


@dataclass(frozen=True)
class Cancel:
    """The job after ``POST /jobs/{id}/cancel``, and whether it had finished before."""

    job: Job
    had_finished: bool


@dataclass(frozen=True)
class SseMessage:
    """One Server-Sent Event: its ``event`` name, its ``data`` and its ``id``."""

    event: str
    data: str
    id: str | None


def parse_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """The events of a ``text/event-stream`` given line by line (comments, such as the
    server's pings, are skipped). Pure."""
    event, data, last_id = "message", list[str](), None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SseMessage(event, "\n".join(data), last_id)
            event, data, last_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id = value
    if data:
        yield SseMessage(event, "\n".join(data), last_id)


def error_for(status: int, body: Any, server: str) -> VmferryError:
    """The error a command raises for the server's answer ``status`` with ``body`` (its
    JSON, or None); ``server`` is the server's URL, for people. Pure."""
    detail = body.get("detail") if isinstance(body, dict) else None
    line = detail if isinstance(detail, str) else None
    if status == 401:
        why = line or "no valid token"
        return NotAuthenticatedError(
            f"the vmferry server at {server} refused {TOKEN_ENV}: {why}; `vmferry users token "
            "NAME`, run where the server's store is, gives a new one"
        )
    if status == 403:
        rule = body.get("rule") if isinstance(body, dict) else None
        return ForbiddenError(
            f"refused by the server's rule {rule or '(unnamed)'}: {line or 'forbidden'}",
            rule=rule if isinstance(rule, str) else None,
        )
    if status == 404:
        return NotFoundError(line or "not found on the server")
    if status == 409:
        return AlreadyExistsError(line or "the server refused it: a conflict")
    if status == 422:
        return BadInputError(_problems(detail))
    if status == 502:
        return HostUnreachableError(line or "a host did not answer the server")
    if status >= 500:
        return ServerError(f"the vmferry server at {server} failed ({status}): "
                           f"{line or 'no detail'}")  # fmt: skip
    return BadInputError(f"the vmferry server at {server} answered {status}: "
                         f"{line or 'no detail'}")  # fmt: skip


def _problems(detail: object) -> str:
    """A 422's problems in one line: ``path: message`` each (vmferry's own bad input has
    no path: its message alone, as the local command says it)."""
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, list) or not detail:
        return "the server refused the request as malformed"
    parts = []
    for problem in detail:
        if not isinstance(problem, dict):
            parts.append(str(problem))
            continue
        path, message = problem.get("path") or "", str(problem.get("msg", "malformed"))
        parts.append(f"{path}: {message}" if path else message)
    return "; ".join(parts)


def _vm_record(item: dict[str, Any]) -> VmRecord:
    """A VM of ``GET /vms`` (VmOut) as the local inventory gives it."""
    return VmRecord(item["host"], VmState(item["state"]), bool(item["persistent"]),
                    _decode(VmSpec, item["spec"], "VM"),
                    devices_read=bool(item.get("devices_read", True)))  # fmt: skip


def _decode(cls: type[T], value: Any, what: str) -> T:
    try:
        return from_jsonable(cls, value)
    except DecodeError as exc:
        raise ServerError(f"the server's {what} is not what this vmferry reads ({exc}); "
                          "is the server another version?") from exc  # fmt: skip


def server_root(url: str) -> str:
    """VMFERRY_URL without a trailing slash or ``/api/v1``."""
    root = url.strip().rstrip("/")
    return root.removesuffix(API_PREFIX).rstrip("/")


class ApiClient:
    """The API at ``url`` as the user holding ``token``."""

    def __init__(
        self, url: str, token: str, *, transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:  # fmt: skip
        self.url = server_root(url)
        if not self.url.startswith(("http://", "https://")):
            raise BadInputError(
                f"{URL_ENV}={url!r} is not an http:// or https:// URL; e.g. "
                "http://127.0.0.1:8470 (where `vmferry server` listens)"
            )
        self._client = httpx.Client(
            base_url=self.url + API_PREFIX, transport=transport, timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )  # fmt: skip

    @classmethod
    def from_env(cls) -> ApiClient:
        """The server at VMFERRY_URL as the user of VMFERRY_TOKEN."""
        url = os.environ.get(URL_ENV, "").strip()
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not url:
            raise BadInputError(f"{URL_ENV} is not set: it names the vmferry server")
        if not token:
            raise NotAuthenticatedError(
                f"{URL_ENV} is set but {TOKEN_ENV} is not: set it to a token from `vmferry "
                f"users add` (or unset {URL_ENV} to run locally)"
            )
        return cls(url, token)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    # -- resources -----------------------------------------------------------------------

    def hosts(self) -> list[Host]:
        """``GET /hosts``: the registered hosts, by name."""
        return [_decode(Host, h, "host") for h in self._json("GET", "/hosts")]

    def vms(self, host: str | None = None) -> Inventory:
        """``GET /vms`` (every page): the VMs of every host, or of ``host``."""
        records: list[VmRecord] = []
        unreachable: dict[str, str] = {}
        offset: int | None = 0
        while offset is not None:
            params: dict[str, str | int] = {"limit": PAGE, "offset": offset}
            if host is not None:
                params["host"] = host
            page = self._json("GET", "/vms", params=params)
            records += [_vm_record(item) for item in page["items"]]
            unreachable.update(page.get("unreachable") or {})
            offset = page.get("next_offset")
        return Inventory(records, unreachable)

    def jobs(self, limit: int = 50) -> list[Job]:
        """``GET /jobs``: the newest jobs first, without their events."""
        found = self._json("GET", "/jobs", params={"limit": limit})
        return [_decode(Job, j, "job") for j in found]

    def job(self, job_id: str) -> Job:
        """``GET /jobs/{id}``: the job with its events."""
        return _decode(Job, self._json("GET", f"/jobs/{_segment(job_id)}"), "job")

    def cancel_job(self, job_id: str) -> Cancel:
        """``POST /jobs/{id}/cancel``: ask the process driving the job to cancel it."""
        answer = self._send("POST", f"/jobs/{_segment(job_id)}/cancel")
        return Cancel(_decode(Job, answer.json(), "job"), had_finished=answer.status_code == 200)

    def audit(self, *, since: str | None, user: str | None, limit: int) -> list[AuditEntry]:
        """``GET /audit``: the trail's ``limit`` newest entries, oldest first."""
        params: dict[str, str | int] = {"limit": limit}
        if since is not None:
            params["since"] = since
        if user is not None:
            params["user"] = user
        found = self._json("GET", "/audit", params=params)
        return [_decode(AuditEntry, e, "audit entry") for e in found]

    def users(self) -> list[User]:
        """``GET /users``: the active users (an admin's read)."""
        return [_decode(User, u, "user") for u in self._json("GET", "/users")]

    def start_migration(self, body: Mapping[str, object], idempotency_key: str) -> Job:
        """``POST /migrations``: the move's job once it exists (finished already when its
        checks blocked it). The key makes a repeated request give the same job."""
        answer = self._send("POST", "/migrations", json=dict(body), timeout=START_TIMEOUT,
                            headers={"Idempotency-Key": idempotency_key})  # fmt: skip
        return _decode(Job, answer.json(), "job")

    def event_stream(self, job_id: str, after: int | None) -> Iterator[SseMessage]:
        """``GET /jobs/{id}/events``: the job's events after the one numbered ``after``
        (all, for None), then its ``end``. Transport errors are httpx's, for
        :class:`JobFollower` to reconnect on."""
        headers = {"Accept": "text/event-stream"}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        path = f"/jobs/{_segment(job_id)}/events"
        with self._client.stream("GET", path, headers=headers, timeout=STREAM_TIMEOUT) as answer:
            if answer.status_code != 200:
                answer.read()
                raise error_for(answer.status_code, _body(answer), self.url)
            yield from parse_sse(answer.iter_lines())

    # -- actions (checks, predictions, profiles, plans, port profiles, imports) ----------

    def check(self, vm: str, to: str, *, copy_storage: bool,
              to_pool: str | None = None) -> dict[str, Any]:  # fmt: skip
        """``POST /checks``: the `vmferry check --json` document (a blocked move is a
        report with ``"blocked": true``, not an error)."""
        body: dict[str, Any] = {"vm": vm, "to": to, "copy_storage": copy_storage}
        if to_pool is not None:
            body["to_pool"] = to_pool
        found: dict[str, Any] = self._json("POST", "/checks", json=body, timeout=START_TIMEOUT)
        return found

    def vm(self, vm: str) -> VmRecord:
        """``GET /vms/{id}``: one VM as its host reports it."""
        return _vm_record(self._json("GET", f"/vms/{_segment(vm)}"))

    def predict(
        self, vm: str, to: str, *, max_downtime_ms: int, bandwidth_mib_s: int | None,
        parallel: int = 0, compression: str = "none",
    ) -> dict[str, Any]:  # fmt: skip
        """``POST /predictions``: the `vmferry predict --json` document."""
        body = {"vm": vm, "to": to, "max_downtime_ms": max_downtime_ms,
                "bandwidth_mib_s": bandwidth_mib_s, "parallel": parallel,
                "compression": compression}  # fmt: skip
        found: dict[str, Any] = self._json("POST", "/predictions", json=body,
                                           timeout=START_TIMEOUT)  # fmt: skip
        return found

    def start_profile(self, vm: str, *, duration_s: float, interval_s: float) -> dict[str, Any]:
        """``POST /profiles``: the run started in the server (``vm``, ``host``,
        ``first_sample_at``, ...), once its first sample is stored."""
        body = {"vm": vm, "duration_s": duration_s, "interval_s": interval_s}
        found: dict[str, Any] = self._json("POST", "/profiles", json=body,
                                           timeout=START_TIMEOUT)  # fmt: skip
        return found

    def start_host_profile(
        self, host: str, *, duration_s: float, interval_s: float
    ) -> dict[str, Any]:
        """``POST /hosts/{name}/profiles``: every running VM of ``host`` profiled in the
        server (``vms``, ``first_sample_at``, ...), once their first samples are stored."""
        body = {"duration_s": duration_s, "interval_s": interval_s}
        found: dict[str, Any] = self._json("POST", f"/hosts/{_segment(host)}/profiles",
                                           json=body, timeout=START_TIMEOUT)  # fmt: skip
        return found

    def vm_profile(self, vm: str, *, since: str | None = None) -> dict[str, Any]:
        """``GET /vms/{id}/profile``: the VM's stored samples (since ``since``) summarised,
        and whether the server samples it now (``sampling``)."""
        params = {} if since is None else {"since": since}
        found: dict[str, Any] = self._json("GET", f"/vms/{_segment(vm)}/profile", params=params)
        return found

    def create_plan(
        self, text: str, *, method: str, time_limit_s: float, shown_as: str
    ) -> dict[str, Any]:
        """``POST /plans`` with the plan file's YAML: the `plan show --json` document of the
        stored plan. A bad plan file is :class:`BadInputError` with one problem per line,
        each naming ``shown_as`` (the file's name here) where the server names its copy."""
        timeout = httpx.Timeout(START_S + time_limit_s, connect=5.0)  # the solver's limit more
        try:
            found: dict[str, Any] = self._json(
                "POST", "/plans", content=text.encode("utf-8"), timeout=timeout,
                params={"method": method, "time_limit_s": time_limit_s},
                headers={"Content-Type": "application/yaml"},
            )  # fmt: skip
        except _PlanProblems as exc:
            lines = [_renamed(p, shown_as) for p in exc.problems]
            raise BadInputError("\n".join(lines)) from None
        return plan_doc(found)

    def plans(self, limit: int = 50) -> list[dict[str, Any]]:
        """``GET /plans``: the newest plans first, without their items."""
        found: list[dict[str, Any]] = self._json("GET", "/plans", params={"limit": limit})
        return found

    def plan(self, plan_id: str) -> dict[str, Any]:
        """``GET /plans/{id}``: the `plan show --json` document."""
        return plan_doc(self._json("GET", f"/plans/{_segment(plan_id)}"))

    def plan_gantt(self, plan_id: str, fmt: str) -> bytes:
        """``GET /plans/{id}/gantt?format=``: the chart (``html`` or ``png``) as the file's
        bytes, or its bars (``json``) as JSON text."""
        path = f"/plans/{_segment(plan_id)}/gantt"
        return self._send("GET", path, params={"format": fmt}).content

    def run_plan(self, plan_id: str) -> dict[str, Any]:
        """``POST /plans/{id}/run``: the plan once the server runs it (with PostgreSQL: once
        it is queued for a worker, as it was)."""
        return self._plan_post(plan_id, "run")

    def resume_plan(self, plan_id: str) -> dict[str, Any]:
        """``POST /plans/{id}/resume``: as :meth:`run_plan`."""
        return self._plan_post(plan_id, "resume")

    def pause_plan(self, plan_id: str) -> dict[str, Any]:
        """``POST /plans/{id}/pause``: the plan (``requested: "pause"`` while its runner has
        yet to act)."""
        return self._plan_post(plan_id, "pause")

    def cancel_plan(self, plan_id: str) -> dict[str, Any]:
        """``POST /plans/{id}/cancel``: the plan (``requested: "cancel"`` while its runner
        has yet to act)."""
        return self._plan_post(plan_id, "cancel")

    def _plan_post(self, plan_id: str, action: str) -> dict[str, Any]:
        return plan_doc(self._json("POST", f"/plans/{_segment(plan_id)}/{action}",
                                   timeout=START_TIMEOUT))  # fmt: skip

    def netprofiles(self) -> list[dict[str, Any]]:
        """``GET /netprofiles``: the named port profiles (`netprofile list --json`)."""
        found: list[dict[str, Any]] = self._json("GET", "/netprofiles")
        return found

    def netprofile(self, name: str) -> dict[str, Any]:
        """``GET /netprofiles/{name}``."""
        found: dict[str, Any] = self._json("GET", f"/netprofiles/{_segment(name)}")
        return found

    def define_netprofile(self, name: str, body: Mapping[str, object]) -> dict[str, Any]:
        """``PUT /netprofiles/{name}``: define or replace a named profile."""
        found: dict[str, Any] = self._json("PUT", f"/netprofiles/{_segment(name)}",
                                           json=dict(body))  # fmt: skip
        return found

    def delete_netprofile(self, name: str) -> dict[str, Any]:
        """``DELETE /netprofiles/{name}``: forget the named profile (``{"removed": [...]}``)."""
        found: dict[str, Any] = self._json("DELETE", f"/netprofiles/{_segment(name)}")
        return found

    def apply_netprofile(self, name: str, host: str) -> dict[str, Any]:
        """``PUT /hosts/{host}/netprofiles/{name}``: the named profile put on ``host``
        (`netprofile apply --json`)."""
        found: dict[str, Any] = self._json(
            "PUT", f"/hosts/{_segment(host)}/netprofiles/{_segment(name)}",
            timeout=START_TIMEOUT)  # fmt: skip
        return found

    def remove_netprofile_from(self, name: str, host: str) -> dict[str, Any]:
        """``DELETE /hosts/{host}/netprofiles/{name}``: the profile taken off ``host``
        (``{"removed": [...]}``)."""
        found: dict[str, Any] = self._json(
            "DELETE", f"/hosts/{_segment(host)}/netprofiles/{_segment(name)}",
            timeout=START_TIMEOUT)  # fmt: skip
        return found

    def capture_netprofiles(self, vm: str) -> dict[str, Any]:
        """``POST /vms/{id}/netprofiles/capture``: the VM's NICs and the profiles kept
        (`netprofile capture --json`)."""
        found: dict[str, Any] = self._json(
            "POST", f"/vms/{_segment(vm)}/netprofiles/capture", timeout=START_TIMEOUT
        )
        return found

    def start_import(self, body: Mapping[str, object]) -> Job | dict[str, Any]:
        """``POST /imports``: the import's job (202), or for a dry run the `vmferry import
        --json` document (200). The paths are the server's."""
        answer = self._send("POST", "/imports", json=dict(body), timeout=START_TIMEOUT)
        if answer.status_code == 200:
            doc: dict[str, Any] = answer.json()
            return doc
        return _decode(Job, answer.json(), "job")

    def resume_job(self, job_id: str) -> Job:
        """``POST /jobs/{id}/resume``: reconcile a job whose vmferry died; the job as
        recorded afterwards (the server waits up to a minute for a running migration)."""
        answer = self._send("POST", f"/jobs/{_segment(job_id)}/resume", timeout=RESUME_TIMEOUT)
        return _decode(Job, answer.json(), "job")

    # -- plumbing ------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            answer = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            started = (
                "" if method != "POST" else "; the move may have started there: `vmferry jobs`"
            )
            raise ServerUnreachableError(
                f"the vmferry server at {self.url} ({URL_ENV}) did not answer {method} "
                f"{API_PREFIX}{path} in time ({type(exc).__name__}){started}"
            ) from exc
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        if answer.is_success:
            return answer
        body = _body(answer)
        plan_problems = _plan_problems(answer.status_code, body)
        if plan_problems:
            raise _PlanProblems(plan_problems)
        if answer.status_code == 404 and body == {"detail": "Not Found"}:  # no route matched
            raise NotFoundError(f"the server has nothing at {method} {API_PREFIX}{path} (404)")
        raise error_for(answer.status_code, body, self.url)


def unreachable(url: str, exc: httpx.TransportError) -> ServerUnreachableError:
    """The one line for a server that cannot be reached."""
    why = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in why.lower():
        why = "connection refused"
    return ServerUnreachableError(f"cannot reach the vmferry server at {url} ({URL_ENV}): {why}; "
                                  "is `vmferry server` running there?")  # fmt: skip


def _body(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"detail": answer.text.strip().splitlines()[0] if answer.text.strip() else None}


def plan_doc(found: dict[str, Any]) -> dict[str, Any]:
    """The server's `plan show --json` document as the local command prints it: the
    schedule's figures it repeats at the top are taken from its ``schedule`` again (as
    service.plan.plan_json does), since the API's schema gives ``makespan_s`` and
    ``lower_bound_s`` as floats (``8.0`` where the plan has ``8``)."""
    schedule = found.get("schedule") or {}
    for key in ("makespan_s", "lower_bound_s"):
        if key in found and key in schedule:
            found[key] = schedule[key]
    return found


class _PlanProblems(BadInputError):
    """A 422 for a bad plan file: its problems, one per line of the local message."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _plan_problems(status: int, body: Any) -> list[str]:
    """The plan file's problems of a 422 from ``POST /plans`` (``type`` ``plan_invalid``),
    or none."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if status != 422 or not isinstance(detail, list):
        return []
    found = [str(p.get("msg", "")) for p in detail
             if isinstance(p, dict) and p.get("type") == "plan_invalid"]  # fmt: skip
    return found if len(found) == len(detail) else []


def _renamed(problem: str, shown_as: str) -> str:
    """A problem the server names its copy of the plan file in (``plan.yaml:8: ...``), as
    the local command names the file."""
    if problem.startswith(SERVER_PLAN_NAME + ":"):
        return shown_as + problem[len(SERVER_PLAN_NAME) :]
    return problem


def _segment(value: str) -> str:
    """``value`` as one path segment (a job id typed by a user may hold anything)."""
    return quote(value, safe="")


class JobFollower:
    """Follows a job's event stream to its end, reconnecting after the last event seen when
    the connection drops (the server resumes from ``Last-Event-ID``). ``on_event`` sees each
    event once; :attr:`events` keeps them."""

    def __init__(
        self, api: ApiClient, job_id: str, on_event: Callable[[JobEvent], None] = lambda _e: None,
        *, retries: int = FOLLOW_RETRIES, sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        self.api, self.job_id, self.on_event = api, job_id, on_event
        self.retries, self.sleep = retries, sleep
        self.last_id: int | None = None
        self.events: list[JobEvent] = []

    def run(self) -> Job:
        """The finished job (without its events: they are in :attr:`events`). Ctrl-C
        (KeyboardInterrupt) goes through; calling :meth:`run` again goes on from the last
        event seen."""
        failures = 0
        while True:
            try:
                for message in self.api.event_stream(self.job_id, self.last_id):
                    failures = 0
                    data = json.loads(message.data)
                    if message.event == "end":
                        return _decode(Job, data, "job")
                    self.events.append(_decode(JobEvent, data, "job event"))
                    if message.id is not None and message.id.isdigit():
                        self.last_id = int(message.id)
                    self.on_event(self.events[-1])
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                failures += 1
                if failures > self.retries:
                    raise ServerUnreachableError(
                        f"lost the vmferry server at {self.api.url} while following job "
                        f"{self.job_id} ({type(exc).__name__}); the job goes on there: "
                        f"`vmferry job show {self.job_id}`"
                    ) from exc
                self.sleep(min(0.5 * 2 ** (failures - 1), 8.0))
                continue
            failures += 1  # the stream ended without its end event: ask again
            if failures > self.retries:
                raise ServerError(f"the server's event stream of job {self.job_id} keeps "
                                  "ending before the job does")  # fmt: skip
            self.sleep(0.5)
