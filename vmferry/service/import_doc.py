"""The document an import gives: `vmferry import --json`, and the data of the import
job's ``import`` event (what `vmferry rollback JOB` reads back: the domain, its host, the
volumes the import made)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from vmferry.service.import_vm import ImportOutcome

__all__ = ["outcome_json"]


def outcome_json(outcome: ImportOutcome) -> dict[str, Any]:
    """The documented `vmferry import --json` document (docs/json.md#import), also each
    import job's ``import`` event (the server's and the command's)."""
    vm = outcome.vm
    pools = {d.volume: d.pool for d in outcome.plan.disks if d.pool is not None}
    return {
        "vm": outcome.plan.name,
        "source_format": str(vm.source_format),
        "destination": outcome.destination,
        "status": outcome.status,
        "reason": outcome.reason,
        "findings": [
            {
                "id": f.id,
                "severity": str(f.severity),
                "message": f.message,
                "remediation": f.remediation,
            }
            for f in outcome.findings
        ],
        "spec": {
            "vcpus": vm.vcpus,
            "sockets": vm.sockets,
            "cores": vm.cores,
            "memory_mb": vm.memory_mb,
            "firmware": str(vm.firmware),
            "secure_boot": vm.secure_boot,
            "guest_os": vm.guest_os.family,
            "guest_os_id": vm.guest_os.id,
            "disks": [
                {
                    "capacity_bytes": d.capacity_bytes,
                    "format": str(d.format),
                    "bus": d.bus,
                    "source": d.path,
                }
                for d in vm.disks
            ],
            "nics": [{"mac": n.mac, "model": n.model, "network": n.network} for n in vm.nics],
        },
        "domain_xml": outcome.domain_xml,
        "disks": [
            {
                "volume": d.volume,
                "pool": pools.get(d.volume, outcome.plan.pool),
                "bytes_written": d.bytes_written,
                "checksum_match": d.checksum_match,
            }
            for d in outcome.disks
        ],
        "pool": outcome.plan.pool,
        "volumes": list(outcome.volumes),
        "started": outcome.started,
        "phases_ms": outcome.phases_ms,
        "source_stopped": outcome.source_stopped,
        "live": None if outcome.live is None else asdict(outcome.live),
        "addresses": [
            {
                "mac": a.mac,
                "expected": list(a.expected),
                "found": None if a.found is None else list(a.found),
                "kept": a.kept,
            }
            for a in outcome.addresses
        ],
    }
