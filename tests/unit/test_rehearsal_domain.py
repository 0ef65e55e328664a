"""The rehearsal copy's domain XML (rehearsal/domain.py, pure): nothing of it may reach the
VM's own disks, network, console or sockets."""

from __future__ import annotations

import pytest
from defusedxml.ElementTree import fromstring

from vmferry.rehearsal.domain import REHEARSAL_NETWORK, rehearsal_name, rehearsal_xml

VM_XML = """<domain type='qemu' id='7'>
  <name>web1</name>
  <uuid>0b3c1c3e-9d7a-4c55-9b1f-3e8f3c0d2a11</uuid>
  <memory unit='KiB'>262144</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>/srv/k</kernel></os>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source pool='lab-shared' volume='web1-data.qcow2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/srv/iso/install.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/srv/shared/quorum.raw'/>
      <target dev='vdb' bus='virtio'/>
      <shareable/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:12:02:64'/>
      <source network='vmf-vms' portgroup='web' bridge='vmfbr0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <bandwidth><inbound average='1000'/></bandwidth>
      <alias name='net0'/>
    </interface>
    <serial type='file'>
      <source path='/var/lib/vmferry-lab/shared/consoles/web1.log' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='/var/lib/vmferry-lab/shared/consoles/web1.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <source mode='bind' path='/run/libvirt/qemu/channel/7-web1/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
    </channel>
    <graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1'/>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+64055</label></seclabel>
</domain>"""

OVERLAY = "/srv/shared/pool/web1-rehearsal-abc-vda.qcow2"


def test_the_copy_has_its_own_name_overlay_network_console_and_socket() -> None:
    copy = fromstring(rehearsal_xml(VM_XML, "web1-rehearsal-abc", {"vda": OVERLAY}))
    assert copy.findtext("name") == "web1-rehearsal-abc"
    assert copy.find("uuid") is None and copy.get("id") is None
    assert copy.find("seclabel") is None and not list(copy.iter("alias"))
    disks = {d.find("target").get("dev"): d for d in copy.iter("disk")}
    assert set(disks) == {"vda", "hdc"}  # the shareable disk was not backed up: left out
    vda = disks["vda"]
    assert vda.get("type") == "file" and vda.find("backingStore") is None
    assert [s.attrib for s in vda.findall("source")] == [{"file": OVERLAY}]
    assert vda.find("driver").get("type") == "qcow2"
    assert disks["hdc"].find("source") is None  # the media stays the VM's
    (nic,) = copy.iter("interface")
    assert nic.attrib == {"type": "network"}
    assert nic.find("source").attrib == {"network": REHEARSAL_NETWORK}
    assert nic.find("mac").get("address") == "52:54:00:12:02:64"
    assert [c.tag for c in nic] == ["mac", "source", "model"]  # no tap, rate or alias
    for port in ("serial", "console"):
        assert copy.find(f"devices/{port}").get("type") == "pty"
        assert copy.find(f"devices/{port}/source") is None
    assert copy.find("devices/channel/source").get("path") is None
    graphics = copy.find("devices/graphics")
    assert graphics.get("autoport") == "yes" and graphics.get("port") is None
    assert "/var/lib/vmferry-lab/shared/consoles/web1.log" not in rehearsal_xml(
        VM_XML, "c", {"vda": OVERLAY})  # fmt: skip


def test_a_writable_disk_without_an_overlay_is_refused() -> None:
    with pytest.raises(ValueError, match="disk vda has no overlay"):
        rehearsal_xml(VM_XML, "c", {})


def test_the_copys_name_is_the_vms_and_the_jobs() -> None:
    assert rehearsal_name("web1", "0b628a1c2d3e") == "web1-rehearsal-0b628a1c"
