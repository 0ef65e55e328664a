"""`vmferry vm set|show|tag`: what a VM declares about itself (its service probes, its tags)."""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from vmferry.errors import BadInputError
from vmferry.model.account import check_tags
from vmferry.model.probe import ProbeKind, ProbeSpecError, VmProbes, parse_probe
from vmferry.store import accounts
from vmferry.store.db import Store, open_store

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class VmDeclared:
    """The `vm show --json` document."""

    vm: str
    probes: tuple[str, ...]
    probe_from: str | None  # "netns:NAME", or None: where vmferry runs
    health_command: tuple[str, ...] | None  # argv the guest agent runs; None: none


def set_probes(
    vm: str, probes: list[str], probe_from: str | None, *, clear: bool = False,
    health_command: str | None = None, clear_health: bool = False, store: Store | None = None,
) -> VmDeclared:  # fmt: skip
    """Declare ``vm``'s probes (added to those it has, or in their place with ``clear``),
    where they run from, and the command its guest agent runs to say it is healthy (a shell
    word list, run without a shell: ``/bin/sh -c '...'`` for one). Everything is checked
    first: on bad input nothing is written."""
    store = store or open_store()
    health = _health(health_command) if health_command is not None else None
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
    kept_health = () if clear_health else current.health
    declared = VmProbes(vm, merged, netns if merged else None,
                        health if health is not None else kept_health)  # fmt: skip
    return _declared(store.set_vm_probes(declared))


def _health(command: str) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise BadInputError(f"--health-command {command!r}: {exc}") from exc
    if not argv or not argv[0].startswith("/"):
        raise BadInputError(f"--health-command {command!r}: give the program's absolute "
                            "path in the guest: /bin/sh -c 'pidof nginx'")  # fmt: skip
    return argv


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
    return VmDeclared(found.vm, found.probes,
                      None if found.netns is None else f"netns:{found.netns}",
                      found.health or None)  # fmt: skip


def set_tags(vm: str, tags: list[str], *, store: Store | None = None) -> tuple[str, ...]:
    """Replace VM ``vm``'s tags (``anti-affinity:G``, ``project:P``, ...); its tags now.
    ``BadInputError`` for a tag that cannot be one, nothing written."""
    why = check_tags(tags)
    if why is not None:
        raise BadInputError(why)
    return accounts.set_vm_tags(store or open_store(), vm, sorted(set(tags)))


def tags(vm: str, *, store: Store | None = None) -> tuple[str, ...]:
    return accounts.tags_of(store or open_store(), vm)
