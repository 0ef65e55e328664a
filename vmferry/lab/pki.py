"""The lab's certificates: a CA of its own, a server certificate per host for libvirtd's
TLS listener and QEMU's migration stream, and a client certificate for vmferry and for the
hosts' libvirtd when it opens a peer-to-peer migration.

The files sit where libvirt and QEMU look for them when told a directory
(`docs/hosts.md` shows the same layout for a real host):

``pki/ca/``                  ``cacert.pem``, ``cakey.pem`` (the CA's key never leaves here)
``pki/client/``              ``cacert.pem``, ``clientcert.pem``, ``clientkey.pem``: a libvirt
                             client's ``pkipath`` (``qemu+tls://HOST/system?pkipath=...``)
``pki/hosts/H/libvirt/``     ``cacert.pem``, ``servercert.pem``, ``serverkey.pem``:
                             libvirtd.conf's ``ca_file``, ``cert_file``, ``key_file``
``pki/hosts/H/qemu/``        ``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``,
                             ``client-cert.pem``, ``client-key.pem``: qemu.conf's
                             ``migrate_tls_x509_cert_dir``

A host's server certificate names its host name and both its addresses (management and
migration), which is what libvirt and QEMU check the peer's name against.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vmferry.lab import topology as topo

VALID_DAYS = 30  # a lab lives for hours; a month leaves room for a long-lived one
_KEY_BITS = 2048


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey


def pki_dir(base: Path) -> Path:
    return base / "pki"


def client_dir(base: Path) -> Path:
    return pki_dir(base) / "client"


def host_libvirt_dir(base: Path, host: str) -> Path:
    return pki_dir(base) / "hosts" / host / "libvirt"


def host_qemu_dir(base: Path, host: str) -> Path:
    return pki_dir(base) / "hosts" / host / "qemu"


def _name(common: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vmferry lab"),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
    ])  # fmt: skip


def _usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates; a leaf signs and (RSA) enciphers keys, as libvirt demands."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)


def make_ca(common: str = "vmferry lab CA") -> Issued:
    key = _key()
    name = _name(common)
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued, common: str, *, server: bool, names: Sequence[str] = (), addrs: Sequence[str] = ()
) -> Issued:
    """A certificate for a TLS server (``server``) or client, signed by ``ca``; a server's
    alternative names are ``names`` (DNS) and ``addrs`` (IP)."""
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(_name(common), ca.cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addrs]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def write_client_dir(directory: Path, ca: Issued, client: Issued) -> None:
    """A libvirt client's ``pkipath``: the CA's certificate, the client's and its key."""
    _write(directory / "cacert.pem", _cert_pem(ca.cert))
    _write(directory / "clientcert.pem", _cert_pem(client.cert))
    _write(directory / "clientkey.pem", _key_pem(client.key), secret=True)


def make_lab_pki(base: Path, hosts: Sequence[topo.LabHost]) -> None:
    """A fresh CA, the client's files and every host's libvirt and QEMU files under
    ``base/pki`` (see the module docstring)."""
    ca = make_ca()
    ca_pem = _cert_pem(ca.cert)
    _write(pki_dir(base) / "ca" / "cacert.pem", ca_pem)
    _write(pki_dir(base) / "ca" / "cakey.pem", _key_pem(ca.key), secret=True)
    write_client_dir(client_dir(base), ca, issue(ca, "vmferry", server=False))
    for host in hosts:
        server = issue(ca, host.name, server=True, names=(host.name,),
                       addrs=(host.mgmt_addr, host.migration_addr))  # fmt: skip
        libvirt_dir = host_libvirt_dir(base, host.name)
        _write(libvirt_dir / "cacert.pem", ca_pem)
        _write(libvirt_dir / "servercert.pem", _cert_pem(server.cert))
        _write(libvirt_dir / "serverkey.pem", _key_pem(server.key), secret=True)
        qemu_client = issue(ca, f"{host.name} migration client", server=False)
        qemu_dir = host_qemu_dir(base, host.name)
        _write(qemu_dir / "ca-cert.pem", ca_pem)
        _write(qemu_dir / "server-cert.pem", _cert_pem(server.cert))
        _write(qemu_dir / "server-key.pem", _key_pem(server.key), secret=True)
        _write(qemu_dir / "client-cert.pem", _cert_pem(qemu_client.cert))
        _write(qemu_dir / "client-key.pem", _key_pem(qemu_client.key), secret=True)
