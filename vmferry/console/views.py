"""What the console's pages show, as pure functions of what vmferry knows: the inventory's
search, sort and pages (the API's :class:`~vmferry.server.inventory.VmQuery` filters), the
fleet's bars, a job's pipeline and progress series, the audit trail's search."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from vmferry.model import VmRecord, VmSpec, VmState
from vmferry.model.account import AuditEntry, Role, project_of
from vmferry.model.hostinfo import HostInfo
from vmferry.model.migration import Job, JobEvent, JobStatus, Strategy
from vmferry.model.project_policy import ProjectPolicy
from vmferry.model.workload import ProfileSample
from vmferry.server.inventory import VmQuery, select_vms
from vmferry.server.roles import Action, decide

__all__ = [
    "DOWNTIMES_MS",
    "PAGE_SIZES",
    "SORT_KEYS",
    "STRATEGIES",
    "Bar",
    "GanttBar",
    "HostRow",
    "InventoryPage",
    "InventoryRequest",
    "LiveFigures",
    "MoveChoices",
    "MoveRequest",
    "PlanSummary",
    "Step",
    "StepState",
    "disk_bytes",
    "filter_audit",
    "fleet_rows",
    "gantt_bars",
    "import_body",
    "importable",
    "inventory_page",
    "job_live",
    "job_update",
    "leftovers",
    "move_choices",
    "networks",
    "parse_inventory",
    "parse_move",
    "pipeline",
    "plan_summary",
    "profile_series",
    "progress_points",
    "project_of",
    "project_records",
    "short_os",
    "size_text",
    "status_after",
    "validation_text",
]

GIB = 2**30
MIB = 2**20
PAGE_SIZES = (25, 50, 100, 200)
SORT_KEYS = ("name", "host", "state", "vcpus", "memory", "disk", "cpu_model", "guest_os", "project")


# -- inventory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InventoryRequest:
    """The inventory page's query string: free words (``q``, each must match the name, a
    tag, the project, the host, the state, the CPU model or the guest OS), the API's
    filters, vCPUs, sort and page."""

    q: str = ""
    query: VmQuery = field(default_factory=VmQuery)
    vcpus_min: int | None = None
    sort: str = "name"
    descending: bool = False
    page: int = 1
    per_page: int = 50

    def url(self, **changes: Any) -> str:
        """``/inventory?...`` for this request with ``changes`` (sort, page...)."""
        wanted = replace(self, **changes)
        params: list[tuple[str, str]] = []
        if wanted.q:
            params.append(("q", wanted.q))
        vq = wanted.query
        for key, value in (("host", vq.host), ("state", vq.state.value if vq.state else None),
                           ("name", vq.name), ("cpu_model", vq.cpu_model),
                           ("guest_os", vq.guest_os), ("memory_min_mib", vq.memory_min_mib),
                           ("memory_max_mib", vq.memory_max_mib),
                           ("vcpus_min", wanted.vcpus_min)):  # fmt: skip
            if value is not None and value != "":
                params.append((key, str(value)))
        params.extend(("tag", tag) for tag in vq.tags)
        if wanted.sort != "name":
            params.append(("sort", wanted.sort))
        if wanted.descending:
            params.append(("dir", "desc"))
        if wanted.per_page != 50:
            params.append(("per_page", str(wanted.per_page)))
        if wanted.page != 1:
            params.append(("page", str(wanted.page)))
        return "/inventory" + (f"?{urlencode(params)}" if params else "")


def _int(text: str | None, low: int, high: int) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return min(max(value, low), high)


def parse_inventory(
    params: Mapping[str, str], tags: list[str]
) -> tuple[InventoryRequest, list[str]]:
    """The inventory request a query string makes, and the problems with it (a value that
    is not understood is dropped and named, never an error page)."""
    problems: list[str] = []
    state: VmState | None = None
    if params.get("state"):
        try:
            state = VmState(params["state"])
        except ValueError:
            problems.append(f"state {params['state']!r} is not one of "
                            + ", ".join(s.value for s in VmState))  # fmt: skip
    sort = params.get("sort", "name")
    if sort not in SORT_KEYS:
        problems.append(f"cannot sort by {sort!r}; sorted by name")
        sort = "name"
    per_page = _int(params.get("per_page"), 1, 1000) or 50
    if per_page not in PAGE_SIZES:
        per_page = 50
    memory_min = _int(params.get("memory_min_mib"), 0, 2**40)
    memory_max = _int(params.get("memory_max_mib"), 0, 2**40)
    for key in ("memory_min_mib", "memory_max_mib", "vcpus_min", "page"):
        if params.get(key, "").strip() and _int(params.get(key), 0, 2**40) is None:
            problems.append(f"{key.replace('_', ' ')} must be a whole number, not {params[key]!r}")

    def text(key: str) -> str | None:
        value = params.get(key, "").strip()
        return value[:255] or None

    query = VmQuery(host=text("host"), state=state, name=text("name"),
                    tags=tuple(t for t in tags if t.strip()), cpu_model=text("cpu_model"),
                    guest_os=text("guest_os"), memory_min_mib=memory_min,
                    memory_max_mib=memory_max)  # fmt: skip
    request = InventoryRequest(q=params.get("q", "").strip()[:255], query=query,
                               vcpus_min=_int(params.get("vcpus_min"), 0, 100_000), sort=sort,
                               descending=params.get("dir") == "desc",
                               page=_int(params.get("page"), 1, 10**9) or 1,
                               per_page=per_page)  # fmt: skip
    return request, problems


@dataclass(frozen=True)
class InventoryPage:
    rows: list[tuple[VmRecord, tuple[str, ...]]]
    total: int
    request: InventoryRequest
    pages: int

    @property
    def first(self) -> int:
        return 0 if not self.total else (self.request.page - 1) * self.request.per_page + 1

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if self.rows else 0


def disk_bytes(spec: VmSpec) -> int:
    """What the VM's disks (not its removable media) hold at most: their sizes' sum."""
    return sum(d.capacity_bytes or 0 for d in spec.disks if not d.removable)


def networks(spec: VmSpec) -> list[str]:
    """The networks (or bridges) the VM's NICs are on, once each."""
    found: list[str] = []
    for nic in spec.nics:
        name = nic.network or nic.bridge or nic.kind
        if name not in found:
            found.append(name)
    return found


def size_text(size: float | None) -> str:
    """Bytes in words: 512 MiB, 2.0 GiB, 1.5 TiB."""
    if size is None:
        return ""
    if size >= 2**40:
        return f"{size / 2**40:.1f} TiB"
    if size >= GIB:
        return f"{size / GIB:.1f} GiB"
    return f"{size / MIB:.0f} MiB"


def short_os(guest_os: str | None) -> str:
    """A libosinfo id shortened for a table: http://debian.org/debian/12 -> debian/12."""
    if not guest_os:
        return ""
    text = guest_os.split("://", 1)[-1]
    return text.split("/", 1)[1] if "/" in text else text


def _words(record: VmRecord, tags: tuple[str, ...]) -> list[str]:
    spec = record.spec
    found = [spec.name, record.host, record.state.value, spec.cpu_model or "",
             spec.guest_os or "", *tags, *project_of(tags), *networks(spec)]  # fmt: skip
    return [w.casefold() for w in found]


def _sort_key(key: str, tags_by_vm: Mapping[str, tuple[str, ...]]) -> Any:
    def by(record: VmRecord) -> Any:
        spec = record.spec
        if key == "host":
            return record.host
        if key == "state":
            return record.state.value
        if key == "vcpus":
            return spec.vcpus
        if key == "memory":
            return spec.memory_bytes
        if key == "cpu_model":
            return spec.cpu_model or ""
        if key == "guest_os":
            return spec.guest_os or ""
        if key == "disk":
            return disk_bytes(spec)
        if key == "project":
            return ",".join(project_of(tags_by_vm.get(spec.name, ())))
        return spec.name

    return by


def project_records(records: Iterable[VmRecord], tags_by_vm: Mapping[str, tuple[str, ...]],
                    project: str | None) -> list[VmRecord]:  # fmt: skip
    """The records a user bound to ``project`` sees (every record when None): the VMs
    tagged ``project:P``."""
    if project is None:
        return list(records)
    return [r for r in records if project in project_of(tags_by_vm.get(r.spec.name, ()))]


def inventory_page(records: list[VmRecord], tags_by_vm: dict[str, tuple[str, ...]],
                   request: InventoryRequest) -> InventoryPage:  # fmt: skip
    """The page of VMs ``request`` asks for: the API's filters (:func:`select_vms`), then
    the free words and vCPUs, sorted by ``request.sort`` (then name and host), paged."""
    every = VmQuery(**{**request.query.__dict__, "limit": max(1, len(records)), "offset": 0})
    matching, _total = select_vms(records, tags_by_vm, every)
    words = [w.casefold() for w in request.q.split()]
    matching = [
        r for r in matching
        if all(any(w in found for found in _words(r, tags_by_vm.get(r.spec.name, ())))
               for w in words)
        and (request.vcpus_min is None or r.spec.vcpus >= request.vcpus_min)
    ]  # fmt: skip
    matching.sort(key=_sort_key(request.sort, tags_by_vm), reverse=request.descending)
    total = len(matching)
    pages = max(1, -(-total // request.per_page))
    page = min(request.page, pages)
    start = (page - 1) * request.per_page
    rows = [
        (r, tags_by_vm.get(r.spec.name, ())) for r in matching[start : start + request.per_page]
    ]
    return InventoryPage(rows, total, replace(request, page=page), pages)


# -- fleet ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One use bar: ``used`` of ``capacity`` (None: not known), in ``unit``."""

    label: str
    used: float
    capacity: float | None
    unit: str
    note: str = ""

    @property
    def percent(self) -> int | None:
        if not self.capacity:
            return None
        return max(0, min(100, round(100 * self.used / self.capacity)))

    @property
    def text(self) -> str:
        used = _fmt(self.used, self.unit)
        if self.capacity is None:
            return f"{used} ({self.note or 'capacity not known'})"
        return f"{used} of {_fmt(self.capacity, self.unit)} ({self.percent} %)"


def _fmt(value: float, unit: str) -> str:
    if unit == "GiB":
        return f"{value:.1f} GiB"
    return f"{value:g} {unit}"


@dataclass(frozen=True)
class HostRow:
    name: str
    uri: str
    state: str  # up | unreachable
    why: str | None
    vms: int
    running: int
    bars: tuple[Bar, ...]
    jobs: tuple[Job, ...]


def fleet_rows(
    hosts: list[tuple[str, str]], records: list[VmRecord], unreachable: Mapping[str, str],
    facts: Mapping[str, HostInfo | str], jobs: list[Job],
) -> list[HostRow]:  # fmt: skip
    """One row per host (name, uri): its state, its VMs, and bars for CPU (vCPUs of its
    running VMs against its logical CPUs), memory (what the host uses against its memory)
    and storage (what its VMs' disks hold against their size). ``facts``: the host's
    :class:`HostInfo`, or why it could not be read."""
    rows = []
    for name, uri in hosts:
        mine = [r for r in records if r.host == name]
        running = [r for r in mine if r.state is VmState.RUNNING]
        info = facts.get(name)
        why = unreachable.get(name) or (info if isinstance(info, str) else None)
        vcpus = sum(r.spec.vcpus for r in running)
        allocated = sum(r.spec.memory_bytes for r in running) / GIB
        disks = [d for r in mine for d in r.spec.disks if not d.removable]
        written = sum(d.allocation_bytes or 0 for d in disks) / GIB
        size = sum(d.capacity_bytes or 0 for d in disks) / GIB
        if isinstance(info, HostInfo):
            used = (info.memory_bytes - info.free_memory_bytes) / GIB
            cpu = Bar("CPU", vcpus, info.cpus, "vCPUs", "running VMs' vCPUs on its CPUs")
            memory = Bar("Memory", used, info.memory_bytes / GIB, "GiB",
                         f"{allocated:.1f} GiB given to running VMs")  # fmt: skip
        else:
            cpu = Bar("CPU", vcpus, None, "vCPUs", "the host's CPUs are not known")
            memory = Bar("Memory", allocated, None, "GiB", "given to running VMs; the host's "
                         "memory is not known")  # fmt: skip
        storage = Bar(
            "Storage",
            written,
            size or None,
            "GiB",
            "no disk sizes known" if not size else "written of the disks' size",
        )
        host_jobs = tuple(
            j for j in jobs if not j.status.finished and name in {j.source, j.destination}
        )
        rows.append(HostRow(name, uri, "unreachable" if why else "up", why, len(mine),
                            len(running), (cpu, memory, storage), host_jobs))  # fmt: skip
    return rows


# -- jobs -------------------------------------------------------------------------------------


class StepState(enum.StrEnum):
    DONE = "done"
    ACTIVE = "active"
    FAILED = "failed"
    PENDING = "pending"  # not reached yet
    SKIPPED = "skipped"  # the job ended before it


@dataclass(frozen=True)
class Step:
    name: str
    state: StepState
    detail: str = ""


STEPS = ("checks", "backup", "transfer", "switchover", "verification", "cleanup")
NO_BACKUP = (
    "vmferry takes no backup copy: the source VM stays defined and intact on its host "
    "until the move is verified"
)


def _reached(job: Job) -> int:
    """The step under way (1: checks, 2: backup, 3: transfer ... 6: cleanup) as the job's
    events show it: running means the transfer began (there is no backup step: see
    :data:`NO_BACKUP`); a switch to post-copy, the switchover; the measured pause (or an
    offline move's restart on the destination), the verification; a recorded verification,
    the cleanup."""
    reached = 1
    began = any(e.kind == "status" and e.data.get("to") == "running" for e in job.events)
    if job.status is JobStatus.RUNNING or began:
        reached = 3
    for event in job.events:
        if event.kind == "escalation" and "post-copy" in event.message:
            reached = max(reached, 4)
        if event.kind == "measure" or (event.kind == "progress" and "downtime" in event.message):
            reached = max(reached, 5)
    result = job.result
    if result is not None and result.verification is not None:
        reached = 6
    return reached


def pipeline(job: Job) -> list[Step]:
    """The job's steps (checks, transfer, switchover, verification, cleanup) as its events
    show them: done, the one under way, failed, or not reached (pending while it runs,
    skipped once it ended)."""
    reached = _reached(job)
    checks = next((e for e in job.events if e.kind == "checks"), None)
    blocked = checks is not None and "blocked" in checks.message
    steps: list[Step] = []
    for index, name in enumerate(STEPS, start=1):
        detail = checks.message if name == "checks" and checks is not None else ""
        if name == "backup":
            steps.append(Step(name, StepState.SKIPPED, NO_BACKUP))
            continue
        if job.status is JobStatus.COMPLETED or index < reached:
            state = StepState.DONE
        elif index == reached:
            if job.status.finished:
                state = StepState.FAILED if job.status is JobStatus.FAILED else StepState.SKIPPED
                detail = job.reason or detail
            else:
                state = StepState.ACTIVE
        else:
            state = StepState.SKIPPED if job.status.finished else StepState.PENDING
        if name == "checks" and blocked:
            state = StepState.FAILED
        steps.append(Step(name, state, detail))
    return steps


def progress_points(job: Job) -> list[dict[str, float]]:
    """The job's progress readings from its events: seconds since the job began, data
    remaining and dirty rate (MiB, MiB/s) where an event carries them (``progress`` events
    with ``memory_remaining_bytes``; an offline move's steps carry none)."""
    points: list[dict[str, float]] = []
    start: datetime | None = None
    for event in job.events:
        at = datetime.fromisoformat(event.at.replace("Z", "+00:00"))
        start = start or at
        data = event.data
        remaining = data.get("memory_remaining_bytes")
        if event.kind != "progress" or not isinstance(remaining, int | float):
            continue
        dirty = data.get("dirty_rate_bytes_s")
        points.append({
            "t": round((at - start).total_seconds(), 3),
            "remaining_mib": float(remaining) / MIB,
            "dirty_mib_s": float(dirty) / MIB if isinstance(dirty, int | float) else 0.0,
        })  # fmt: skip
    return points


# -- audit ------------------------------------------------------------------------------------


def filter_audit(entries: list[AuditEntry], *, action: str = "", target: str = "",
                 result: str = "", until: datetime | None = None) -> list[AuditEntry]:  # fmt: skip
    """The entries whose action and target contain ``action`` and ``target`` (any case),
    with ``result`` (when given), at or before ``until`` (when given), newest first."""
    act, tgt = action.strip().casefold(), target.strip().casefold()
    found = [
        e for e in entries
        if act in e.action.casefold() and tgt in (e.target or "").casefold()
        and (not result or e.result == result)
        and (until is None or datetime.fromisoformat(e.at.replace("Z", "+00:00")) <= until)
    ]  # fmt: skip
    return list(reversed(found))


# -- plans ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GanttBar:
    """One VM's row of a plan's Gantt chart, in SVG units (0..1000 across the span)."""

    vm: str
    wave: int
    status: str
    predicted: tuple[float, float]  # x, width
    actual: tuple[float, float] | None
    label: str


def gantt_bars(
    items: Iterable[Mapping[str, Any]], width: float = 1000
) -> tuple[list[GanttBar], float]:
    """The Gantt rows of a plan's items (``plan_json``'s ``items``): predicted and actual
    bars scaled to ``width`` over the longest of the two makespans; and that span (s)."""
    rows = list(items)
    ends = [float(i["predicted"]["end_s"]) for i in rows]
    ends += [float((i.get("actual") or {}).get("end_s") or 0) for i in rows]
    span = max([1.0, *ends])
    bars = []
    for item in rows:
        p = item["predicted"]
        actual = item.get("actual") or {}
        start, end = actual.get("start_s"), actual.get("end_s")
        drawn = None
        if start is not None:
            stop = float(end) if end is not None else float(start) + 1
            drawn = (width * float(start) / span, max(2.0, width * (stop - float(start)) / span))
        predicted = (width * p["start_s"] / span,
                     max(2.0, width * (p["end_s"] - p["start_s"]) / span))  # fmt: skip
        label = f"predicted {p['start_s']} to {p['end_s']} s"
        if start is not None:
            label += f", actual {start} to {end if end is not None else 'now'} s"
        bars.append(GanttBar(item["vm"], int(item["wave"]), str(item["status"]), predicted,
                             drawn, label))  # fmt: skip
    return bars, span


def _last_sample(job: Job) -> dict[str, object] | None:
    for event in reversed(job.events):
        if event.kind == "progress" and "memory_remaining_bytes" in event.data:
            return event.data
    return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class LiveFigures:
    """A running move's figures from its newest progress sample (None: not known)."""

    iteration: int | None
    remaining_mib: float | None
    rate_mib_s: float | None  # the stream's throughput
    dirty_mib_s: float | None
    eta_s: float | None  # remaining / (rate - dirty), when the rate outruns the dirtying
    projected_downtime_ms: float | None  # QEMU's expected downtime
    escalations: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"iteration": self.iteration, "remaining_mib": self.remaining_mib,
                "rate_mib_s": self.rate_mib_s, "dirty_mib_s": self.dirty_mib_s,
                "eta_s": self.eta_s, "projected_downtime_ms": self.projected_downtime_ms,
                "escalations": list(self.escalations)}  # fmt: skip


def job_live(job: Job) -> LiveFigures:
    """Rate, ETA, projected downtime and escalations of ``job`` as its events show them."""
    sample = _last_sample(job) or {}
    remaining = _number(sample.get("memory_remaining_bytes"))
    rate = _number(sample.get("throughput_bytes_s"))
    dirty = _number(sample.get("dirty_rate_bytes_s"))
    eta = None
    if (
        not job.status.finished
        and remaining is not None
        and rate is not None
        and rate > (dirty or 0)
    ):
        eta = round(remaining / (rate - (dirty or 0)), 1)
    iteration = _number(sample.get("iteration"))
    downtime = _number(sample.get("expected_downtime_ms"))
    return LiveFigures(
        int(iteration) if iteration is not None else None,
        None if remaining is None else round(remaining / MIB, 1),
        None if rate is None else round(rate / MIB, 1),
        None if dirty is None else round(dirty / MIB, 1), eta, downtime,
        tuple(e.message for e in job.events if e.kind == "escalation"),
    )  # fmt: skip


def status_after(status: JobStatus, event: JobEvent) -> JobStatus:
    """A job's status once ``event`` is recorded: a status change's ``to``, else as it was."""
    if event.kind == "status":
        try:
            return JobStatus(str(event.data.get("to")))
        except ValueError:
            return status
    return status


def status_at(events: Sequence[JobEvent], count: int) -> JobStatus:
    """A job's status once its first ``count`` events were recorded (from ``pending``)."""
    status = JobStatus.PENDING
    for event in events[:count]:
        status = status_after(status, event)
    return status


def job_update(job: Job, index: int) -> dict[str, object]:
    """What the job page's stream sends for event ``index``: the event, the job's status,
    its pipeline and figures now, and the chart's point when the event is a sample."""
    event = job.events[index]
    points = progress_points(replace(job, events=job.events[: index + 1]))
    is_sample = event.kind == "progress" and "memory_remaining_bytes" in event.data
    return {
        "index": index, "at": event.at, "kind": event.kind, "message": event.message,
        "status": job.status.value,
        "steps": [{"name": s.name, "state": s.state.value, "detail": s.detail}
                  for s in pipeline(job)],
        "live": job_live(job).as_dict(),
        "point": points[-1] if is_sample and points else None,
    }  # fmt: skip


def leftovers(job: Job) -> list[str]:
    """After a failed or cancelled job: the events that say what was undone or left
    (undo steps, incoming copies, clean-up notes), oldest first."""
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        return []
    words = ("undo", "undone", "left", "incoming", "clean", "remove", "destroy", "keeps running")
    return [
        e.message
        for e in job.events
        if e.kind in ("status", "note", "network") and any(w in e.message for w in words)
    ]


# -- the move form ----------------------------------------------------------------------------

STRATEGIES = ("live", "postcopy", "warm", "cold", "warm-incremental")
DOWNTIMES_MS = (100, 300, 500, 1000, 3000, 10_000)


@dataclass(frozen=True)
class MoveChoices:
    """What the Move form offers a user for one VM: nothing (``allowed`` false, ``why``)
    or the destinations, strategies and maximum downtimes its role and project allow."""

    allowed: bool
    why: str
    destinations: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()
    downtimes_ms: tuple[int, ...] = DOWNTIMES_MS


@dataclass(frozen=True)
class MoveRequest:
    to: str
    strategy: Strategy
    max_downtime_ms: int


def move_choices(role: Role, project: str | None, tags: tuple[str, ...], host: str,
                 hosts: list[str], policy: ProjectPolicy | None) -> MoveChoices:  # fmt: skip
    """The Move form's choices for a VM tagged ``tags`` running on ``host``, as the role
    rules (:func:`decide`) and a self-service project's policy allow."""
    decision = decide(role, project, Action.MIGRATE, tags)
    if not decision.allowed:
        return MoveChoices(False, decision.reason)
    strategies: tuple[str, ...] = STRATEGIES
    if project is not None:
        if policy is None:
            return MoveChoices(False, f"project {project} has no self-service policy: an admin "
                               "sets one with `vmferry projects set`")  # fmt: skip
        strategies = tuple(s for s in STRATEGIES if s in policy.strategies)
    destinations = tuple(h for h in hosts if h != host)
    if not destinations:
        return MoveChoices(False, "no other host is registered to move it to")
    if not strategies:
        return MoveChoices(False, f"project {project}'s policy allows no strategy")
    return MoveChoices(True, decision.reason, destinations, strategies)


def parse_move(form: Mapping[str, str], choices: MoveChoices) -> MoveRequest | str:
    """The move the form asks for, or what is wrong with it (in words for the user)."""
    if not choices.allowed:
        return f"You may not move this VM: {choices.why}."
    to, strategy = form.get("to", "").strip(), form.get("strategy", "").strip()
    if to not in choices.destinations:
        return ("Choose a destination among " + ", ".join(choices.destinations) + "."
                if to == "" else f"{to!r} is not a host you can move this VM to.")  # fmt: skip
    if strategy not in choices.strategies:
        return f"Choose a strategy among {', '.join(choices.strategies)}."
    downtime = _int(form.get("max_downtime_ms"), 0, 10**9)
    if downtime is None or downtime not in choices.downtimes_ms:
        return "Choose a maximum downtime among the listed values."
    return MoveRequest(to, Strategy(strategy), downtime)


# -- profile charts ---------------------------------------------------------------------------


def profile_series(samples: Iterable[ProfileSample]) -> dict[str, list[float | None]]:
    """A VM's stored profile as uPlot's columns: time (Unix seconds), CPU use (%), memory
    used (GiB), dirty rate and disk writes (MiB/s); None where a sample lacks the metric."""
    series: dict[str, list[float | None]] = {"t": [], "cpu_pct": [], "memory_used_gib": [],
                                             "dirty_mib_s": [], "disk_write_mib_s": []}  # fmt: skip
    for sample in samples:
        at = datetime.fromisoformat(sample.taken_at.replace("Z", "+00:00"))
        cpu, used = sample.get("cpu_share"), sample.get("memory_used_bytes")
        dirty, write = sample.get("dirty_rate_bytes_s"), sample.get("disk_write_bytes_s")
        series["t"].append(at.timestamp())
        series["cpu_pct"].append(None if cpu is None else round(100 * cpu, 1))
        series["memory_used_gib"].append(None if used is None else round(used / GIB, 3))
        series["dirty_mib_s"].append(None if dirty is None else round(dirty / MIB, 2))
        series["disk_write_mib_s"].append(None if write is None else round(write / MIB, 2))
    return series


@dataclass(frozen=True)
class PlanSummary:
    """A plan's items counted by state, and predicted against actual over the moved ones."""

    by_status: dict[str, int]
    moved: int
    predicted_s: int  # the moved VMs' predicted durations, summed
    actual_s: float  # their actual durations, summed
    worst_vm: str | None  # the moved VM whose actual time exceeded its prediction most
    worst_ratio: float | None


def plan_summary(items: Iterable[Mapping[str, Any]]) -> PlanSummary:
    """What a plan report says first, from ``plan_json``'s items."""
    by_status: dict[str, int] = {}
    predicted = moved = 0
    actual = 0.0
    worst: tuple[float, str] | None = None
    for item in items:
        by_status[str(item["status"])] = by_status.get(str(item["status"]), 0) + 1
        ran = item.get("actual") or {}
        start, end = ran.get("start_s"), ran.get("end_s")
        if start is None or end is None:
            continue
        moved += 1
        took = float(end) - float(start)
        predicted += int(item["predicted"]["duration_s"])
        actual += took
        ratio = took / max(1.0, float(item["predicted"]["duration_s"]))
        if worst is None or ratio > worst[0]:
            worst = (ratio, str(item["vm"]))
    return PlanSummary(
        by_status,
        moved,
        predicted,
        round(actual, 1),
        worst[1] if worst else None,
        round(worst[0], 2) if worst else None,
    )


# -- import -----------------------------------------------------------------------------------

IMPORTABLE = (".vmx", ".ova", ".ovf", ".vmdk", ".vhdx", ".qcow2", ".raw", ".img")


def importable(name: str) -> bool:
    """Whether a file named ``name`` is something `vmferry import` reads."""
    return name.lower().endswith(IMPORTABLE)


def import_body(asked: Mapping[str, str]) -> tuple[dict[str, Any] | None, str]:
    """The body of POST /api/v1/imports the import form asks for (``what``: ``check`` is a
    dry run), or why there is none. The network map is one ``SOURCE=DESTINATION`` a line."""
    if not asked.get("source"):
        return None, "Choose a source under the import directories."
    if not asked.get("to"):
        return None, "Choose the host to import it to."
    mapping = [line.strip() for line in asked.get("network_map", "").splitlines() if line.strip()]
    body: dict[str, Any] = {"source": asked["source"], "to": asked["to"],
                            "network_map": mapping, "dry_run": asked.get("what") != "run",
                            "start": asked.get("start") == "on"}  # fmt: skip
    if asked.get("name"):
        body["name"] = asked["name"]
    if asked.get("storage_pool"):
        body["storage_pool"] = asked["storage_pool"]
    return body, ""


def validation_text(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic's or FastAPI's validation errors as one line a user can act on."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg', 'not valid')}" if where else
                     str(error.get("msg", "not valid")))  # fmt: skip
    return "; ".join(parts) or "the form is not valid"
