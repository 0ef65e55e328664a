"""What one host reports about a VM's domain, for reconciling jobs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DomainView:
    """What one host reports about the VM's domain.

    ``running`` and ``paused`` are exclusive (both false: shut off, crashed or absent);
    ``job_active`` is true while libvirt runs a job on the domain (a migration, in or out);
    ``postcopy_failed`` when libvirt says a post-copy migration of it broke off (the VM is
    split between the two hosts; libvirt keeps the job for a resume).
    """

    exists: bool
    running: bool = False
    paused: bool = False
    persistent: bool = False
    job_active: bool = False
    postcopy_failed: bool = False

    @property
    def active(self) -> bool:
        """A QEMU process exists for the domain (running or paused)."""
        return self.exists and (self.running or self.paused)


ABSENT = DomainView(exists=False)
