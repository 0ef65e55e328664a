"""The plan file (plan.yaml): pydantic models, and a loader whose errors name the line.

``load_plan(path)`` / ``parse_plan(text, source)`` read YAML with PyYAML, keep the line of
every key and list item, validate with pydantic (unknown keys are errors), then check the
references between entries (hosts named by VMs, anti-affinity targets, duplicates). Every
problem becomes one line ``plan.yaml:14: vms[3].memory_mb: Input should be greater than 0``
(list indexes count from 0), and all of them are raised together as one ``BadInputError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator

from vmferry.errors import BadInputError
from vmferry.model.hook import Hook, HookSpecError, make_hook, merge_hooks

Loc = tuple[str | int, ...]
StrategyHint = Literal["auto", "live", "postcopy", "warm", "cold", "warm-incremental"]
# a VM's own: live-import is for VMs of a vSphere source only
VmStrategyHint = Literal["auto", "live", "postcopy", "warm", "cold", "warm-incremental",
                         "live-import"]  # fmt: skip
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


def _offset_or_datetime(value: Any) -> float | datetime:
    """A window bound: seconds from the plan's start (a number), or an ISO datetime."""
    if isinstance(value, bool):
        raise ValueError("should be seconds from the plan start or an ISO datetime")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError("an offset should be a finite number of seconds >= 0")
        return float(value)
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("should be seconds from the plan start or an ISO datetime")


WindowBound = Annotated[float | datetime, PlainValidator(_offset_or_datetime)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    """Values for every VM or host that does not set its own."""

    max_downtime_ms: Annotated[int, Field(gt=0)] = 300
    strategy: StrategyHint = "auto"
    link_gbps: Annotated[float, Field(gt=0)] = 10.0
    wave_slice_s: Annotated[int, Field(gt=0)] = 600
    backup_pool: Name | None = None  # back every VM's disks up into this pool first
    rollback: bool = False  # a move whose verification fails is moved back
    # a warm import from a vSphere source copies what changed this often until its cutover
    precopy_interval_s: Annotated[float, Field(gt=0)] = 3600.0


class Fleet(_Strict):
    """Fleet-wide limits. ``bandwidth_budget_gbps``: all migrations together, at any time."""

    bandwidth_budget_gbps: Annotated[float | None, Field(gt=0)] = None


class HostEntry(_Strict):
    """A host that VMs leave or arrive on. ``cpus`` counts the vCPUs it may run,
    ``memory_mb`` the memory it may give to the VMs of this plan (after what other VMs use).
    ``link_gbps`` is its migration link; ``max_concurrent`` overrides the number of
    migrations it may take part in at once (default: 4 below 10 Gbit/s, else 8)."""

    name: Name
    cpus: int = Field(gt=0)
    memory_mb: int = Field(gt=0)
    cpu_model: str | None = None
    cpu_family: str | None = None
    link_gbps: Annotated[float | None, Field(gt=0)] = None
    max_concurrent: Annotated[int | None, Field(gt=0)] = None
    # what the VMs imported onto it run as (`vmferry import --virt-type`): kvm when its
    # libvirt offers it, unless set
    virt_type: Literal["auto", "kvm", "qemu"] = "auto"


class SourceEntry(_Strict):
    """A registered vSphere source (`vmferry sources add`) whose VMs this plan imports.
    ``link_gbps`` is what its datastores give all the plan's reads together and
    ``max_concurrent`` how many imports read from it at once (defaults as for a host);
    ``network_map`` maps its port groups to libvirt networks and ``storage_map`` its
    datastores to storage pools (``*``: every other datastore), as `vmferry import`'s
    ``--network-map`` and ``--storage-map``."""

    name: Name
    link_gbps: Annotated[float | None, Field(gt=0)] = None
    max_concurrent: Annotated[int | None, Field(gt=0)] = None
    network_map: dict[str, Name] = Field(default_factory=dict)
    storage_map: dict[str, Name] = Field(default_factory=dict)


IMPORT_STRATEGIES = ("auto", "warm", "cold", "live-import")


class HookEntry(_Strict):
    """A hook (docs/hooks.md): ``url`` (a webhook, signed with the secret in the environment
    variable ``secret_env``) or ``exec`` (an executable's absolute path), run at ``phase``."""

    name: str
    phase: Literal["pre-migrate", "post-migrate", "on-failure"]
    url: str | None = None
    exec: str | None = None
    timeout_s: float = 10.0
    retries: Annotated[int | None, Field(ge=0)] = None
    required: bool = False
    secret_env: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> HookEntry:
        self.hook()
        return self

    def hook(self) -> Hook:
        """The hook this entry declares (``ValueError``, one line, when it cannot be one)."""
        try:
            return make_hook(self.name, self.phase, url=self.url, exec_path=self.exec,
                             timeout_s=self.timeout_s, retries=self.retries,
                             required=self.required, secret_env=self.secret_env)  # fmt: skip
        except HookSpecError as exc:
            raise ValueError(str(exc)) from None


class VmEntry(_Strict):
    """A VM to move. No ``destination``: the planner places it. ``predicted_s`` overrides
    the duration; ``bytes`` overrides what is sent (default: ``memory_mb``)."""

    name: Name
    source: Name
    destination: Name | None = None
    memory_mb: int = Field(gt=0)
    vcpus: int = Field(gt=0)
    cpu_model_required: str | None = None
    group: Name | None = None
    anti_affinity: list[Name] = Field(default_factory=list)
    max_downtime_ms: Annotated[int | None, Field(gt=0)] = None
    strategy: VmStrategyHint | None = None
    predicted_s: Annotated[float | None, Field(gt=0)] = None
    bytes: Annotated[int | None, Field(gt=0)] = None
    tags: dict[str, str] = Field(default_factory=dict)
    hooks: list[HookEntry] = Field(default_factory=list)
    backup_pool: Name | None = None  # overrides the plan's default
    rollback: bool | None = None


class WindowEntry(_Strict):
    """A maintenance window; migrations start and end inside one."""

    start: WindowBound
    end: WindowBound


class PlanSpec(_Strict):
    """A whole plan file."""

    version: Literal[1]
    name: str | None = None
    start_at: datetime | None = None
    defaults: Defaults = Defaults()
    fleet: Fleet = Fleet()
    hosts: list[HostEntry] = Field(min_length=1)
    sources: list[SourceEntry] = Field(default_factory=list)
    vms: list[VmEntry] = Field(min_length=1)
    windows: list[WindowEntry] = Field(default_factory=list)
    hooks: list[HookEntry] = Field(default_factory=list)

    def host(self, name: str) -> HostEntry:
        return next(h for h in self.hosts if h.name == name)

    def source(self, name: str) -> SourceEntry | None:
        """The vSphere source ``name`` (None: it is no source of this plan, but a host)."""
        return next((s for s in self.sources if s.name == name), None)

    def imports(self, vm: VmEntry) -> bool:
        """Whether ``vm`` comes from a vSphere source (an import, not a move between
        hosts)."""
        return self.source(vm.source) is not None

    def endpoints(self) -> list[HostEntry | SourceEntry]:
        """Everything a migration leaves or reaches: the hosts, then the sources."""
        return [*self.hosts, *self.sources]

    def window_offsets(self) -> list[tuple[float, float]]:
        """The windows as (start, end) seconds from the plan's start, sorted and merged.
        Call only on a checked spec (``check_references``)."""
        spans = sorted(
            (_as_offset(w.start, self.start_at), _as_offset(w.end, self.start_at))
            for w in self.windows
        )
        merged: list[tuple[float, float]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged


def _as_offset(value: float | datetime, start_at: datetime | None) -> float:
    if isinstance(value, datetime):
        if start_at is None:
            raise ValueError("an ISO datetime needs the plan's start_at")
        return (value - start_at).total_seconds()
    return value


def vm_max_downtime_ms(vm: VmEntry, defaults: Defaults) -> int:
    """The VM's downtime tolerance: its own field, else its ``max_downtime_ms`` tag, else
    the plan's default."""
    if vm.max_downtime_ms is not None:
        return vm.max_downtime_ms
    tag = vm.tags.get("max_downtime_ms")
    if tag is not None and tag.isdigit() and int(tag) > 0:
        return int(tag)
    return defaults.max_downtime_ms


def plan_hooks(spec: PlanSpec, vm: str) -> tuple[Hook, ...]:
    """The hooks a plan gives ``vm``'s move: the plan's, then the VM entry's (which replaces
    a plan hook of the same name)."""
    entry = next((v for v in spec.vms if v.name == vm), None)
    own = () if entry is None else tuple(h.hook() for h in entry.hooks)
    return merge_hooks(tuple(h.hook() for h in spec.hooks), own)


def plan_safety(spec: PlanSpec, vm: str) -> tuple[str | None, bool]:
    """The backup pool and the rollback choice for ``vm``'s move: its entry's, else the
    plan's defaults."""
    entry = next((v for v in spec.vms if v.name == vm), None)
    pool = entry.backup_pool if entry is not None and entry.backup_pool else None
    rollback = entry.rollback if entry is not None else None
    return (pool or spec.defaults.backup_pool,
            spec.defaults.rollback if rollback is None else rollback)  # fmt: skip


def default_link_slots(link_gbps: float) -> int:
    """vMotion's rule: 4 concurrent migrations on a 1 Gbit/s link, 8 on 10 Gbit/s and up."""
    return 8 if link_gbps >= 10 else 4


# -- references between entries ---------------------------------------------------------


def check_references(spec: PlanSpec) -> list[tuple[Loc, str]]:
    """Problems pydantic cannot see: duplicates, unknown hosts, bad anti-affinity targets,
    windows that end before they start. Each as (location, message)."""
    problems: list[tuple[Loc, str]] = []
    hosts: dict[str, int] = {}
    for i, h in enumerate(spec.hosts):
        if h.name in hosts:
            problems.append((("hosts", i, "name"), f"host {h.name!r} is listed twice"))
        hosts.setdefault(h.name, i)
    sources: set[str] = set()
    for i, src in enumerate(spec.sources):
        if src.name in sources:
            problems.append((("sources", i, "name"), f"source {src.name!r} is listed twice"))
        elif src.name in hosts:
            problems.append((("sources", i, "name"), f"{src.name!r} is a host's name too"))
        sources.add(src.name)
    vms: dict[str, int] = {}
    groups: set[str] = set()
    for i, vm in enumerate(spec.vms):
        if vm.name in vms:
            problems.append((("vms", i, "name"), f"vm {vm.name!r} is listed twice"))
        vms.setdefault(vm.name, i)
        if vm.group is not None:
            groups.add(vm.group)
    for i, vm in enumerate(spec.vms):
        if vm.source in sources:
            problems += _import_problems(spec, i, vm)
        elif vm.source not in hosts:
            problems.append((("vms", i, "source"), f"unknown host {vm.source!r}"))
        elif vm.strategy == "live-import":
            problems.append((("vms", i, "strategy"), "live-import is for a VM of a vSphere "
                             "source (sources:); a VM on a host moves live, postcopy, warm, "
                             "cold or warm-incremental"))  # fmt: skip
        if vm.destination is not None:
            if vm.destination in sources:
                problems.append((("vms", i, "destination"), f"{vm.destination!r} is a vSphere "
                                 "source: VMs go to hosts"))  # fmt: skip
            elif vm.destination not in hosts:
                problems.append((("vms", i, "destination"), f"unknown host {vm.destination!r}"))
            elif vm.destination == vm.source:
                problems.append(
                    (("vms", i, "destination"), "the destination is the source: nothing to move")
                )
        if vm.group is not None and vm.group in vms:
            problems.append((("vms", i, "group"), f"group {vm.group!r} has the name of a vm"))
        for j, target in enumerate(vm.anti_affinity):
            if target == vm.name:
                problems.append((("vms", i, "anti_affinity", j), "a vm cannot avoid itself"))
            elif target not in vms and target not in groups:
                problems.append(
                    (("vms", i, "anti_affinity", j), f"{target!r} is neither a vm nor a group")
                )
    problems += _duplicate_hooks(spec.hooks, ("hooks",))
    for i, vm in enumerate(spec.vms):
        problems += _duplicate_hooks(vm.hooks, ("vms", i, "hooks"))
    for i, w in enumerate(spec.windows):
        try:
            a, b = _as_offset(w.start, spec.start_at), _as_offset(w.end, spec.start_at)
        except ValueError as e:
            problems.append((("windows", i), str(e)))
            continue
        except TypeError:
            problems.append(
                (("windows", i), "mixes datetimes with and without a time zone (see start_at)")
            )
            continue
        if b <= a:
            problems.append((("windows", i, "end"), "the window ends before it starts"))
        elif a < 0:
            problems.append((("windows", i, "start"), "the window starts before start_at"))
    return problems


def _import_problems(spec: PlanSpec, i: int, vm: VmEntry) -> list[tuple[Loc, str]]:
    """What a VM imported from a vSphere source may not have: a move's strategy, a backup
    (an import never writes its source), a source as its destination."""
    problems: list[tuple[Loc, str]] = []
    if vm.strategy is not None and vm.strategy not in IMPORT_STRATEGIES:
        problems.append((("vms", i, "strategy"), f"a VM from vSphere source {vm.source} is "
                         "imported: auto, warm, cold or live-import"))  # fmt: skip
    if vm.backup_pool is not None:
        problems.append((("vms", i, "backup_pool"), "an import never writes its source: "
                         "nothing to back up"))  # fmt: skip
    return problems


def _duplicate_hooks(hooks: list[HookEntry], at: Loc) -> list[tuple[Loc, str]]:
    seen: set[str] = set()
    problems: list[tuple[Loc, str]] = []
    for i, h in enumerate(hooks):
        if h.name in seen:
            problems.append(((*at, i, "name"), f"hook {h.name!r} is listed twice"))
        seen.add(h.name)
    return problems


def validate_spec(spec: PlanSpec) -> PlanSpec:
    """Raise ``BadInputError`` if the references of an already built spec do not hold."""
    problems = check_references(spec)
    if problems:
        raise BadInputError("\n".join(f"{format_loc(loc)}: {msg}" for loc, msg in problems))
    return spec


# -- YAML with line numbers --------------------------------------------------------------


def format_loc(loc: Sequence[str | int]) -> str:
    """('vms', 3, 'memory_mb') -> 'vms[3].memory_mb'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top)"


def _line_map(node: yaml.Node) -> tuple[dict[Loc, int], list[tuple[int, str]]]:
    """Line (1-based) of every key and list item, by location; and duplicate keys."""
    lines: dict[Loc, int] = {(): node.start_mark.line + 1}
    duplicates: list[tuple[int, str]] = []

    def walk(n: yaml.Node, path: Loc) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in n.value:
                key = str(key_node.value)
                if key in seen:
                    duplicates.append(
                        (key_node.start_mark.line + 1, f"{format_loc((*path, key))}: duplicate key")
                    )
                seen.add(key)
                lines[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    walk(node, ())
    return lines, duplicates


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int:
    for cut in range(len(loc), -1, -1):
        line = lines.get(loc[:cut])
        if line is not None:
            return line
    return 1


def _pydantic_problems(error: ValidationError) -> Iterator[tuple[Loc, str]]:
    for e in error.errors(include_url=False):
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        yield tuple(e["loc"]), msg.removeprefix("Value error, ")


#: (source, vm) -> what a plan file may leave out for a VM of a vSphere source
#: (``memory_mb``, ``vcpus``, ``bytes``: read from the source), or why it cannot be read.
ImportFacts = Callable[[str, str], dict[str, int] | str]


def _fill_imports(data: Any, facts: ImportFacts) -> list[tuple[Loc, str]]:
    """Fill in, in the raw document, what each VM of a vSphere source leaves out; the VMs
    the source cannot answer for as problems."""
    if not isinstance(data, dict):
        return []
    listed = data.get("sources")
    names = {s["name"] for s in listed if isinstance(s, dict) and isinstance(s.get("name"), str)
             } if isinstance(listed, list) else set()  # fmt: skip
    vms = data.get("vms")
    problems: list[tuple[Loc, str]] = []
    for i, vm in enumerate(vms if isinstance(vms, list) else []):
        if not isinstance(vm, dict) or vm.get("source") not in names:
            continue
        if not isinstance(vm.get("name"), str):
            continue
        found = facts(str(vm["source"]), vm["name"])
        if isinstance(found, str):
            problems.append((("vms", i, "name"), found))
            continue
        for key, value in found.items():
            vm.setdefault(key, value)
    return problems


def _missing(message: str) -> bool:
    return message == "Field required"


def parse_plan(text: str, source: str = "plan.yaml", facts: ImportFacts | None = None) -> PlanSpec:
    """Parse and check plan YAML. ``source`` names the file in the error lines; ``facts``
    fills in what the VMs of vSphere sources leave out (see :data:`ImportFacts`)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise BadInputError(f"{source}:{line}: not valid YAML: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise BadInputError(f"{source}: not valid YAML: {e}") from e
    if root is None:
        raise BadInputError(f"{source}:1: the plan is empty")
    if not isinstance(root, yaml.MappingNode):
        raise BadInputError(f"{source}:{root.start_mark.line + 1}: the plan should be a mapping")
    lines, duplicates = _line_map(root)
    if duplicates:
        raise BadInputError("\n".join(f"{source}:{line}: {msg}" for line, msg in duplicates))
    data = yaml.SafeLoader(text).get_single_data()
    problems = [] if facts is None else _fill_imports(data, facts)
    try:
        spec = PlanSpec.model_validate(data)
    except ValidationError as e:
        unread = {loc[:2] for loc, _ in problems}  # VMs a source could not fill in
        problems += [(loc, msg) for loc, msg in _pydantic_problems(e)
                     if not (loc[:2] in unread and _missing(msg))]  # fmt: skip
    else:
        problems += check_references(spec)
    if problems:
        raise BadInputError(
            "\n".join(
                f"{source}:{_line_of(loc, lines)}: {format_loc(loc)}: {msg}"
                for loc, msg in problems
            )
        )
    return spec


def load_plan(path: str | Path, facts: ImportFacts | None = None) -> PlanSpec:
    """Read and check a plan file; see the module docstring for the errors, and
    :func:`parse_plan` for ``facts``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInputError(f"cannot read the plan {p}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise BadInputError(f"{p}: not UTF-8 text") from e
    return parse_plan(text, source=p.name, facts=facts)


__all__ = [
    "IMPORT_STRATEGIES",
    "Defaults",
    "Fleet",
    "HookEntry",
    "HostEntry",
    "ImportFacts",
    "PlanSpec",
    "SourceEntry",
    "VmEntry",
    "WindowEntry",
    "check_references",
    "default_link_slots",
    "format_loc",
    "load_plan",
    "parse_plan",
    "plan_hooks",
    "validate_spec",
    "vm_max_downtime_ms",
]
