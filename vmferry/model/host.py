"""Hosts vmferry manages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Host:
    """A libvirt host registered with vmferry.

    ``uri`` is the libvirt connection URI (``qemu+tcp://198.18.0.11/system``);
    ``migration_uri`` is where the migration stream goes (``tcp://198.18.1.11``), or
    ``None`` to let libvirt choose.
    """

    name: str
    uri: str
    migration_uri: str | None = None
