"""`vmferry check`: can a VM move live to another host? (vmferry's CheckMigrate)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vmferry.assess.maintenance import maintenance_finding
from vmferry.assess.network import apply_to_findings
from vmferry.assess.preflight import PreflightFacts, evaluate
from vmferry.assess.stream_features import feature_findings
from vmferry.assess.transport import tls_decision
from vmferry.drivers.libvirt_facts import gather_preflight_facts
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.probe_loop import try_once
from vmferry.model import Finding, is_blocked
from vmferry.model.finding import Severity, by_severity
from vmferry.model.migration import Compression, TlsMode
from vmferry.model.probe import VmProbes
from vmferry.service.locate import locate
from vmferry.service.netprofile import gather_move_facts
from vmferry.service.settings import migration_tls
from vmferry.store.db import open_store
from vmferry.store.maintenance import maintenance_of

__all__ = ["CheckReport", "check_migration"]


@dataclass(frozen=True)
class CheckReport:
    """The pre-flight verdict for moving ``vm`` live from ``source`` to ``destination``
    (host names); ``blocked`` is true while any finding is a blocker."""

    vm: str
    source: str
    destination: str
    findings: tuple[Finding, ...]
    blocked: bool
    facts: PreflightFacts | None = field(default=None, compare=False, repr=False)
    encrypt: bool = False  # a live move's stream goes over TLS (assess.transport)

    @property
    def blocker_ids(self) -> list[str]:
        """The ids of the findings that block the move."""
        return [f.id for f in self.findings if f.severity is Severity.BLOCKER]


def check_migration(
    vm: str, to: str, *, copy_storage: bool = False, tls: TlsMode | None = None,
    parallel: int = 0, compression: Compression = Compression.NONE,
    to_pool: str | None = None, postcopy: bool = False,
) -> CheckReport:  # fmt: skip
    """Run every pre-flight check for moving ``vm`` live to the registered host ``to``.

    ``tls`` is the stream's encryption (None: the ``migration.tls`` setting; warm and cold
    moves pass ``off``: they send no migration stream); ``parallel`` and ``compression``
    the stream's features, which both hosts' libvirt and QEMU must do
    (:mod:`vmferry.assess.stream_features`; ``postcopy``: the move may switch to post-copy,
    which some QEMUs refuse beside channels); ``to_pool`` the destination pool the copied
    disks go into (``copy_storage`` only). Changes nothing. Raises
    :class:`~vmferry.errors.NotFoundError` (exit 2) for an unknown host or VM and
    :class:`~vmferry.errors.HostUnreachableError` (exit 2) when the source or the
    destination does not answer: without them there is nothing to check.
    """
    store = open_store()
    destination = store.get_host(to)
    # the destination first: if it does not answer, say so at once
    with LibvirtHost.connect(destination.name, destination.uri) as dst:
        location = locate(vm, store.list_hosts())
        source = location.host
        with LibvirtHost.connect(source.name, source.uri) as src:
            facts = gather_preflight_facts(
                src,
                dst,
                vm,
                source_migration_uri=source.migration_uri,
                destination_migration_uri=destination.migration_uri,
                copy_storage=copy_storage,
                copy_to_pool=to_pool if copy_storage else None,
            )
            network = gather_move_facts(src, dst, vm, source, destination)
    facts = replace(
        facts,
        vm_also_defined_on=location.also_defined_on,
        unsearched_hosts=location.unreachable,
    )
    findings = tuple(evaluate(facts))
    if source.name != destination.name:  # the segment and the VM's port profiles
        findings = tuple(apply_to_findings(list(findings), network))
    encrypt, tls_finding = tls_decision(tls or migration_tls(store), source.name,
                                        source.migration_tls, destination.name,
                                        destination.migration_tls)  # fmt: skip
    if tls_finding is not None and source.name != destination.name:
        findings = tuple(by_severity((*findings, tls_finding)))
    if source.name != destination.name:
        stream = feature_findings(parallel, compression, facts.source, facts.destination,
                                  postcopy=postcopy)  # fmt: skip
        findings = tuple(by_severity((*findings, *stream)))
    findings = tuple(by_severity((*findings, *probe_findings(store.vm_probes(vm)))))
    held = maintenance_finding(maintenance_of(store, destination.name))
    if held is not None and source.name != destination.name:
        findings = tuple(by_severity((*findings, held)))
    return CheckReport(vm, source.name, destination.name, findings, is_blocked(findings), facts,
                       encrypt)  # fmt: skip


def probe_findings(declared: VmProbes) -> list[Finding]:
    """One try of each probe the VM declares: one that does not answer now cannot witness
    the move (a warning, never a blocker: the service may be down for a reason)."""
    if not declared.probes:
        return []
    answered = try_once(declared.probes, declared.netns)
    where = f" from network namespace {declared.netns}" if declared.netns else ""
    return [
        Finding(
            "probe.unreachable",
            Severity.WARNING,
            f"probe {spec} does not answer{where}: it cannot witness the move",
            f"check the service, or change the VM's probes (`vmferry vm set {declared.vm} "
            "--clear-probes --probe ...`)",
        )
        for spec, ok in zip(declared.probes, answered, strict=True)
        if not ok
    ]
