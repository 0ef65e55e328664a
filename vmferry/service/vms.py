"""`vmferry vm set|show`: what a VM declares about itself (its service probes)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vmferry.errors import BadInputError
from vmferry.model.probe import ProbeKind, ProbeSpecError, VmProbes, parse_probe
from vmferry.store.db import Store, open_store

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class VmDeclared:
    """The `vm show --json` document."""

    vm: str
    probes: tuple[str, ...]
    probe_from: str | None  # "netns:NAME", or None: where vmferry runs


def set_probes(
    vm: str, probes: list[str], probe_from: str | None, *, clear: bool = False,
    store: Store | None = None,
) -> VmDeclared:  # fmt: skip
    """Declare ``vm``'s probes (added to those it has, or in their place with ``clear``) and
    where they run from. Every spec is checked first: on bad input nothing is written."""
    store = store or open_store()
    for text in probes:
        try:
            spec = parse_probe(text)
        except ProbeSpecError as exc:
            raise BadInputError(str(exc)) from exc
        if spec.kind is ProbeKind.ICMP and shutil.which("ping") is None:
            raise BadInputError(f"probe {text!r} needs ping on this machine (apt-get install "
                                "iputils-ping)")  # fmt: skip
    current = store.vm_probes(vm)
    netns = current.netns
    if probe_from is not None:
        netns = _netns(probe_from)
    kept = () if clear else current.probes
    merged = tuple(dict.fromkeys((*kept, *(p.strip() for p in probes))))
    return _declared(store.set_vm_probes(VmProbes(vm, merged, netns if merged else None)))


def show(vm: str, store: Store | None = None) -> VmDeclared:
    return _declared((store or open_store()).vm_probes(vm))


def _netns(probe_from: str) -> str | None:
    if probe_from in ("", "local"):
        return None
    kind, _, name = probe_from.partition(":")
    if kind != "netns" or not name or "/" in name:
        raise BadInputError(f"--probe-from takes netns:NAME or local, not {probe_from!r}")
    if not (NETNS_DIR / name).exists():
        raise BadInputError(f"no network namespace {name!r} on this machine (`ip netns list` "
                            "lists them)")  # fmt: skip
    return name


def _declared(found: VmProbes) -> VmDeclared:
    return VmDeclared(
        found.vm, found.probes, None if found.netns is None else f"netns:{found.netns}"
    )
