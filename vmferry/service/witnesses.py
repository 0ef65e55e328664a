"""The witnesses of one move: what a site offers for the VM (:mod:`vmferry.verify.sites`)
and the service probes the VM declares (``vmferry vm set VM --probe``, kept in the store)."""

from __future__ import annotations

from vmferry.model.migration import Strategy
from vmferry.store.db import Store
from vmferry.verify import sites
from vmferry.verify.probe_witness import ProbeWitness
from vmferry.verify.witness import NoWitness, Witness, Witnesses


def witness_for(vm: str, strategy: Strategy, store: Store) -> Witness:
    parts: list[Witness] = []
    site = sites.witness_for(vm, strategy)
    if not isinstance(site, NoWitness):
        parts.append(site)
    declared = store.vm_probes(vm)
    if declared.probes:
        parts.append(ProbeWitness(declared.probes, declared.netns))
    if not parts:
        return NoWitness()
    return parts[0] if len(parts) == 1 else Witnesses(parts)
