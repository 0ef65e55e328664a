"""Hosts vmferry manages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Host:
    """A libvirt host registered with vmferry.

    ``uri`` is the libvirt connection URI (``qemu+tcp://198.18.0.11/system``);
    ``migration_uri`` is where the migration stream goes (``tcp://198.18.1.11``), or
    ``None`` to let libvirt choose.

    ``shell`` is how vmferry runs commands on the host for what libvirt does not do (nft
    rules, tc shaping, bridge FDB reads, ARP probes): ``netns:NAME`` for a host that is a
    network namespace on this machine, ``local`` for this machine, or ``None``: vmferry runs
    nothing there and leaves the shaping to libvirt (see docs/network.md).

    ``migration_tls`` says the host has QEMU's migration certificates (qemu.conf's
    ``migrate_tls_x509_cert_dir``, with a server and a client certificate): a live move to or
    from it may encrypt its stream. vmferry cannot read it through libvirt; the user (or the
    lab) declares it, and libvirt refuses an encrypted move before anything is sent if the
    files are not there.

    ``link_mbps`` is the rate of the migration link into the host when it is known (Mbit/s):
    the default bandwidth of a live move to it and the link of its predictions.
    """

    name: str
    uri: str
    migration_uri: str | None = None
    shell: str | None = None
    link_mbps: int | None = None
    migration_tls: bool = False
