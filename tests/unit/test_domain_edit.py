"""drivers/domain_edit.py (pure): a domain's disks pointed at other files, the rest kept."""

from __future__ import annotations

import pytest

from vmferry.drivers.domain_edit import with_disk_files
from vmferry.drivers.domain_xml import parse_domain_xml
from vmferry.errors import VmferryError

DOMAIN = """<domain type='kvm'><name>web1</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='/var/lib/libvirt/images/web1-root.qcow2'/><target dev='vda' bus='virtio'/></disk>
<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>
  <source pool='default' volume='web1-data.qcow2'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>"""


def test_a_volume_disk_becomes_a_file_disk_at_the_new_path_and_the_others_stay() -> None:
    edited = with_disk_files(DOMAIN, {"vdb": ("/srv/pool/web1-data.raw", "raw")})
    disks = {d.target: d for d in parse_domain_xml(edited).disks}
    assert (disks["vdb"].source_kind, disks["vdb"].source, disks["vdb"].format, disks["vdb"].pool
            ) == ("file", "/srv/pool/web1-data.raw", "raw", None)  # fmt: skip
    assert disks["vda"] == {d.target: d for d in parse_domain_xml(DOMAIN).disks}["vda"]
    assert "pool='default'" not in edited and "volume=" not in edited


def test_the_format_is_kept_when_none_is_given() -> None:
    edited = with_disk_files(DOMAIN, {"vda": ("/srv/pool/web1-root.qcow2", None)})
    (vda, _) = parse_domain_xml(edited).disks
    assert (vda.source, vda.format) == ("/srv/pool/web1-root.qcow2", "qcow2")


def test_a_target_the_domain_lacks_is_an_error() -> None:
    with pytest.raises(VmferryError, match="the domain has no disk vdz"):
        with_disk_files(DOMAIN, {"vdz": ("/x", None)})
