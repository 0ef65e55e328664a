"""The lab's state file: what `lab up` made, so `lab down` removes exactly that."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


def lab_dir() -> Path:
    """Where the lab keeps its state, per-host libvirt directories and shared storage."""
    return Path(os.environ.get("VMFERRY_LAB_DIR", "/var/lib/vmferry-lab"))


@dataclass
class ProcessRecord:
    """A process the lab started, known by pid and start time (so a reused pid is not ours)."""

    pid: int
    role: str
    host: str
    start_ticks: int


@dataclass
class GuestRecord:
    name: str
    host: str
    octet: int
    address: str
    mac: str
    console: str
    data_disk: str
    data_sha256: str
    watched: bool = True  # the lab's witness watches it (lab/site.py)


@dataclass
class LabState:
    hosts: int
    link_mbps: int
    status: str = "starting"  # starting | up
    processes: list[ProcessRecord] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # root-namespace links
    registered_hosts: list[str] = field(default_factory=list)
    guests: dict[str, GuestRecord] = field(default_factory=dict)
    segments: list[int] = field(default_factory=list)  # VM segment per host; empty: all 1
    transport: str = "tls"  # how vmferry reaches the hosts' libvirtd: tls | tcp
    failed: dict[str, str] = field(default_factory=dict)  # host -> kill | partition


def _from_json(data: dict[str, Any]) -> LabState:
    state = LabState(hosts=int(data["hosts"]), link_mbps=int(data["link_mbps"]))
    state.status = str(data.get("status", "starting"))
    state.processes = [ProcessRecord(**p) for p in data.get("processes", [])]
    state.namespaces = [str(n) for n in data.get("namespaces", [])]
    state.links = [str(n) for n in data.get("links", [])]
    state.registered_hosts = [str(n) for n in data.get("registered_hosts", [])]
    state.guests = {k: GuestRecord(**v) for k, v in data.get("guests", {}).items()}
    state.segments = [int(s) for s in data.get("segments", [])]
    state.transport = str(data.get("transport", "tcp"))  # labs from before TLS used tcp
    state.failed = {str(k): str(v) for k, v in data.get("failed", {}).items()}
    return state


def load_state(directory: Path | None = None) -> LabState | None:
    path = (directory or lab_dir()) / STATE_FILE
    if not path.exists():
        return None
    return _from_json(json.loads(path.read_text()))


def save_state(state: LabState, directory: Path | None = None) -> None:
    """Write atomically: a crash mid-write leaves the previous state, never half of one."""
    directory = directory or lab_dir()
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2, sort_keys=True))
    os.replace(tmp, directory / STATE_FILE)


def remove_state(directory: Path | None = None) -> None:
    (directory or lab_dir()).joinpath(STATE_FILE).unlink(missing_ok=True)
