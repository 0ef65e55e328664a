"""The libvirt domain XML of a lab guest (pure: same inputs, same XML)."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from vmferry.lab import topology as topo


@dataclass(frozen=True)
class LabGuestSpec:
    name: str
    memory_mb: int
    working_set_mb: int
    dirty_mb_s: int
    address: str
    mac: str
    kernel: str
    initrd: str
    console_log: str
    data_volume: str
    vcpus: int = 1
    portgroup: str | None = None  # a portgroup (port profile) of the lab's VM network
    agent: bool = True  # a virtio-serial channel for the QEMU guest agent
    data_pool: str = topo.SHARED_POOL  # or topo.LOCAL_POOL: the host's own disk


def kernel_cmdline(spec: LabGuestSpec) -> str:
    return (
        "console=ttyS0 quiet panic=-1 "
        f"vmferry.ip={spec.address}/24 vmferry.ws_mb={spec.working_set_mb} "
        f"vmferry.rate_mb_s={spec.dirty_mb_s}"
    )


def lab_guest_xml(spec: LabGuestSpec) -> str:
    """TCG domain (LAB-NOTES: KVM is not usable here) with a direct-boot kernel."""
    q = quoteattr
    portgroup = f" portgroup={q(spec.portgroup)}" if spec.portgroup else ""
    agent_channel = (
        "    <channel type='unix'>\n"
        "      <target type='virtio' name='org.qemu.guest_agent.0'/>\n"
        "    </channel>\n"
        if spec.agent
        else ""
    )
    return f"""<domain type='qemu'>
  <name>{spec.name}</name>
  <memory unit='MiB'>{spec.memory_mb}</memory>
  <vcpu placement='static'>{spec.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{spec.kernel}</kernel>
    <initrd>{spec.initrd}</initrd>
    <cmdline>{kernel_cmdline(spec)}</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
    <topology sockets='1' dies='1' cores='{spec.vcpus}' threads='1'/>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source pool={q(spec.data_pool)} volume={q(spec.data_volume)}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address={q(spec.mac)}/>
      <source network={q(topo.VM_NETWORK_NAME)}{portgroup}/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path={q(spec.console_log)} append='on'/>
      <target port='0'/>
    </serial>
{agent_channel}    <memballoon model='virtio'>
      <stats period='1'/>
    </memballoon>
  </devices>
</domain>
"""
