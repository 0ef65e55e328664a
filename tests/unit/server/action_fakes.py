"""Fakes of the services behind the API's actions (check, predict, profile, plan
measurement and moves, import, job resume, port profiles on hosts), as create_app's
``services``: no libvirt. They answer from the fleet of conftest.FLEET and the hosts
registered in the store, and raise what the real services raise for an unknown VM or
host."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vmferry.errors import BadInputError, HostUnreachableError, InUseError, NotFoundError
from vmferry.imports.domain_xml import render_domain_xml
from vmferry.imports.findings import evaluate
from vmferry.imports.mapping import ImportPlan, plan_import
from vmferry.model import Finding, VmRecord, VmState, is_blocked
from vmferry.model.finding import Severity
from vmferry.model.import_target import DestinationFacts, PoolFacts
from vmferry.model.migration import Compression, Job, MigrationOptions
from vmferry.model.netprofile import Segment, VmPort
from vmferry.model.workload import ProfileSample
from vmferry.netprofile.spec import make_profile
from vmferry.plan import PlanSpec
from vmferry.predict.model import DEFAULT_CALIBRATION, PredictInputs, predict
from vmferry.predict.profile import summarise
from vmferry.server.actions import Services
from vmferry.service import netprofile
from vmferry.service.check import CheckReport
from vmferry.service.import_vm import DiskOutcome, ImportOutcome, ImportRequest
from vmferry.service.netprofile import ApplyReport, CaptureReport
from vmferry.service.plan import Measured
from vmferry.service.predict import PredictReport
from vmferry.service.profile import ProfileRun
from vmferry.sources import open_source
from vmferry.store.db import Store

MIB = 2**20


def _find(records: list[VmRecord], vm: str) -> VmRecord:
    for record in records:
        if record.spec.name == vm:
            return record
    raise NotFoundError(f"no VM named {vm!r} on the registered hosts")


@dataclass
class FakeActions:
    """Each fake records its calls; ``hold`` keeps profiling and imports going until
    ``release`` is set."""

    store: Store
    records: list[VmRecord]
    plan_migrate: Callable[..., Any]
    hold: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[str, str]] = field(default_factory=list)
    in_use: dict[str, str] = field(default_factory=dict)  # port profile -> the VM using it
    resumed: list[str] = field(default_factory=list)

    def services(self) -> Services:
        return Services(check=self.check, predict=self.predict, profile=self.profile,
                        plan_measure=self.measure, plan_migrate=self.plan_migrate,
                        import_vm=self.import_vm, resume_job=self.resume,
                        probe_host=self.probe_host, netprofile_apply=self.netprofile_apply,
                        netprofile_remove=self.netprofile_remove,
                        netprofile_capture=self.netprofile_capture,
                        start_wait_s=10)  # fmt: skip

    def probe_host(self, name: str, uri: str) -> None:
        """No connection is made: a URI naming "unreachable" does not answer."""
        self.calls.append(("probe", uri))
        if "unreachable" in uri:
            raise HostUnreachableError(f"host {name!r}: cannot connect to libvirt at {uri}")

    def check(self, vm: str, to: str, *, copy_storage: bool,
              to_pool: str | None = None) -> CheckReport:  # fmt: skip
        self.calls.append(("check", vm))
        destination = self.store.get_host(to)
        source = _find(self.records, vm).host
        findings: list[Finding] = []
        if source == destination.name:
            where = f"{vm} runs on {to} already"
            findings.append(Finding("vm.already-there", Severity.BLOCKER, where,
                                    "choose another host"))  # fmt: skip
        if not copy_storage:
            findings.append(Finding("storage.shared", Severity.INFO, "disks are shared", ""))
        return CheckReport(vm, source, destination.name, tuple(findings), is_blocked(findings))

    def predict(
        self, vm: str, to: str, *, max_downtime_ms: int, bandwidth_mib_s: int | None,
        store: Store, parallel: int = 0, compression: Compression = Compression.NONE,
    ) -> PredictReport:  # fmt: skip
        self.calls.append(("predict", vm))
        destination = store.get_host(to)
        record = _find(self.records, vm)
        if record.state is not VmState.RUNNING:
            raise BadInputError(f"VM {vm!r} is {record.state}; only a running VM can be measured")
        link = (bandwidth_mib_s or 100) * MIB
        inputs = PredictInputs(memory_bytes=record.spec.memory_bytes, dirty_rate_bytes_s=MIB,
                               link_bytes_s=link, zero_fraction=0.5,
                               downtime_limit_ms=max_downtime_ms, channels=max(1, parallel),
                               compression_ratio=0.5 if compression is Compression.ZSTD
                               else 1.0)  # fmt: skip
        return PredictReport(vm, record.host, destination.name,
                             predict(inputs, DEFAULT_CALIBRATION), {"test": "fake"})  # fmt: skip

    def profile(
        self, vm: str | None, *, host: str | None, duration_s: float, interval_s: float,
        on_sample: Callable[[ProfileSample], None],
        on_start: Callable[[str, tuple[str, ...]], None] | None, store: Store,
    ) -> list[ProfileRun]:  # fmt: skip
        """One VM, or every running VM of ``host`` (kvm3 does not answer)."""
        self.calls.append(("profile", vm or f"host {host}"))
        if vm is not None:
            records = [_find(self.records, vm)]
            if records[0].state is not VmState.RUNNING:
                raise BadInputError(f"VM {vm!r} is {records[0].state}; only a running VM has "
                                    "a workload")  # fmt: skip
        else:
            assert host is not None
            if store.get_host(host).name == "kvm3":
                raise HostUnreachableError("host 'kvm3': cannot connect to libvirt")
            records = sorted((r for r in self.records
                              if r.host == host and r.state is VmState.RUNNING),
                             key=lambda r: r.spec.name)  # fmt: skip
            if not records:
                raise NotFoundError(f"host {host!r} runs no VMs to profile")
        if on_start is not None:
            on_start(records[0].host, tuple(r.spec.name for r in records))
        samples: dict[str, list[ProfileSample]] = {r.spec.name: [] for r in records}
        for i in range(max(1, int(duration_s / interval_s))):
            at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            for record in records:
                metrics = {"cpu_share": 0.1 * (i + 1), "vcpus": record.spec.vcpus,
                           "memory_bytes": record.spec.memory_bytes,
                           "memory_used_bytes": record.spec.memory_bytes // 4,
                           "dirty_rate_bytes_s": MIB}  # fmt: skip
                sample = ProfileSample(record.spec.name, record.host, at, metrics)
                store.add_profile_samples([sample])
                samples[record.spec.name].append(sample)
                on_sample(sample)
            if self.hold:
                self.release.wait(10)
        return [ProfileRun(r.spec.name, r.host, tuple(samples[r.spec.name]),
                           summarise(r.spec.name, r.host, samples[r.spec.name], r.spec.vcpus,
                                     r.spec.memory_bytes))
                for r in records]  # fmt: skip

    def netprofile_apply(self, name: str, host: str) -> ApplyReport:
        """The named profile (read from $VMFERRY_NETPROFILES) on a registered host; no
        libvirt: the report says the portgroup was added."""
        self.calls.append(("netprofile-apply", f"{name}@{host}"))
        profile = netprofile.get_profile(name)
        self._answering(host)
        return ApplyReport(host, name, profile.network, "added", "none")

    def netprofile_remove(self, name: str, host: str) -> list[str]:
        """As :meth:`netprofile_apply`; a profile named in ``in_use`` is in use there."""
        self.calls.append(("netprofile-remove", f"{name}@{host}"))
        profile = netprofile.get_profile(name)
        self._answering(host)
        if name in self.in_use:
            raise InUseError(f"profile {name!r} is in use on {host} by {self.in_use[name]}")
        return [f"portgroup {name} of {profile.network}"]

    def netprofile_capture(self, vm: str) -> CaptureReport:
        """The VM's one NIC uses the portgroup ``captured`` of ``default``, 1000 KiB/s in;
        that profile is kept by name, as the real capture does."""
        self.calls.append(("netprofile-capture", vm))
        record = _find(self.records, vm)
        self._answering(record.host)
        profile = make_profile("captured", "default", inbound_kib_s=1000)
        netprofile.save_profile(profile)
        port = VmPort(vm, "52:54:00:00:00:01", Segment("default", "virbr0"), "captured",
                      "vnet0", ("198.18.2.10",))  # fmt: skip
        return CaptureReport(vm, record.host, (port,), (profile,))

    def _answering(self, host: str) -> None:
        if self.store.get_host(host).name == "kvm3":
            raise HostUnreachableError(f"host {host!r}: cannot connect to libvirt")

    def measure(self, spec: PlanSpec, _store: Store) -> tuple[dict[str, Measured], dict[str, str]]:
        self.calls.append(("measure", ",".join(vm.name for vm in spec.vms)))
        return {}, {vm.name: "the test measures nothing" for vm in spec.vms}

    def import_vm(
        self, request: ImportRequest, *, note: Callable[[str], None],
        on_disk_progress: Callable[[int, float], None],
        on_begin: Callable[[ImportPlan], None] | None = None,
        cutover_due: Callable[[], bool] | None = None,
    ) -> ImportOutcome:  # fmt: skip
        """The real source parser and import planning (pure) against a made-up destination;
        no disk is copied, nothing is defined."""
        self.calls.append(("import", str(request.source)))
        host = self.store.get_host(request.to)
        vm = open_source(request.source, workdir=request.source.parent, limits=request.limits,
                         overrides=request.overrides)  # fmt: skip
        dest = DestinationFacts(host.name, frozenset({"default"}),
                                {"default": PoolFacts("default", "/nowhere", 2**40)},
                                frozenset())  # fmt: skip
        plan = plan_import(vm, request.options, dest)
        findings = tuple(evaluate(vm, plan, dest, v2v_missing=None))
        outcome = ImportOutcome(vm, host.name, "dry-run", None, findings, plan,
                                render_domain_xml(plan))  # fmt: skip
        if request.dry_run:
            return outcome
        if on_begin is not None:
            on_begin(plan)
        note(f"reading {request.source.name}")
        for percent in (0.0, 50.0):
            on_disk_progress(0, percent)
            if self.hold:
                self.release.wait(10)
        on_disk_progress(0, 100.0)
        disks = tuple(DiskOutcome(d.volume, 4096, True) for d in plan.disks)
        return ImportOutcome(vm, host.name, "completed", None, findings, plan, outcome.domain_xml,
                             disks, phases_ms={"copy": 1},
                             volumes=tuple(f"/nowhere/{d.volume}" for d in plan.disks))  # fmt: skip

    def resume(self, job_id: str) -> Job:
        self.resumed.append(job_id)
        return self.store.get_job(job_id)


def plan_migrate_of(migrate: Callable[..., Any]) -> Callable[..., Any]:
    """conftest's FakeMigrate as plan_run calls the engine (with on_progress and note)."""

    def call(vm: str, to: str, options: MigrationOptions, *, note: Callable[[str], None],
             **_hooks: Any) -> Any:  # fmt: skip
        return migrate(vm, to, options, on_job=lambda _job_id: note("checks clear"))

    return call
