"""The witnesses of one move: the VM's QEMU guest agent (when it answers), what a site
offers for the VM (:mod:`vmferry.verify.sites`) and the service probes the VM declares
(``vmferry vm set VM --probe``, kept in the store)."""

from __future__ import annotations

from vmferry.model import Host
from vmferry.model.migration import Strategy
from vmferry.store.db import Store
from vmferry.verify import sites
from vmferry.verify.agent_witness import AgentWitness
from vmferry.verify.probe_witness import ProbeWitness
from vmferry.verify.witness import NoWitness, Witness, Witnesses


def witness_for(vm: str, strategy: Strategy, store: Store, source: Host,
                destination: Host) -> Witness:  # fmt: skip
    # a cold (or warm-incremental) move boots the guest again: its agent comes back after the boot
    settle_s = 120.0 if strategy.boots else 15.0
    declared = store.vm_probes(vm)
    parts: list[Witness] = [AgentWitness(vm, source, destination, settle_s=settle_s,
                                         health=declared.health)]  # fmt: skip
    site = sites.witness_for(vm, strategy)
    if not isinstance(site, NoWitness):
        parts.append(site)
    if declared.probes:
        parts.append(ProbeWitness(declared.probes, declared.netns))
    return Witnesses(parts)
