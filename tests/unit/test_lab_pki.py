"""The lab's certificates: what libvirt and QEMU check in them."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from vmferry.lab import pki
from vmferry.lab import topology as topo


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_host_and_the_client_chain_to_the_labs_ca(tmp_path: Path) -> None:
    hosts = topo.make_topology(2, 400).hosts
    pki.make_lab_pki(tmp_path, hosts)
    ca = _cert(tmp_path / "pki" / "ca" / "cacert.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    client = _cert(pki.client_dir(tmp_path) / "clientcert.pem")
    client.verify_directly_issued_by(ca)
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for host in hosts:
        server = _cert(pki.host_libvirt_dir(tmp_path, host.name) / "servercert.pem")
        server.verify_directly_issued_by(ca)
        alt = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert alt.get_values_for_type(x509.DNSName) == [host.name]
        assert alt.get_values_for_type(x509.IPAddress) == [
            ipaddress.ip_address(host.mgmt_addr),
            ipaddress.ip_address(host.migration_addr),
        ]
        key_usage = server.extensions.get_extension_for_class(x509.KeyUsage).value
        assert key_usage.digital_signature and key_usage.key_encipherment  # libvirt insists
        qemu = pki.host_qemu_dir(tmp_path, host.name)
        assert _cert(qemu / "server-cert.pem") == server
        _cert(qemu / "client-cert.pem").verify_directly_issued_by(ca)
        assert sorted(p.name for p in qemu.iterdir()) == [
            "ca-cert.pem",
            "client-cert.pem",
            "client-key.pem",
            "server-cert.pem",
            "server-key.pem",
        ]
    keys = list((tmp_path / "pki").rglob("*key.pem"))
    assert len(keys) == 1 + 1 + 3 * len(hosts)
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
