"""The cluster's certificates, as kubeadm makes them: a CA, the API server's serving certificate
and the admin's client certificate (O=system:masters), EC P-256 keys (milliseconds to make, where
RSA 2048 takes ~100 ms).  Files are root's alone (0600) under the cluster's state directory,
so `down` removes them with it.
May import: the standard library, cryptography, netsim.model."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netsim.model import state

PKI_DIR = "pki"
CA_DAYS = 3650
LEAF_DAYS = 365
SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc")


@dataclass(frozen=True)
class Paths:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        """The key service account tokens are signed with (kubeadm's sa.key)."""
        return self.dir / "sa.key"


def paths(cluster: str) -> Paths:
    return Paths(state.cluster_dir(cluster) / PKI_DIR)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []) + \
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks of other machines
            .not_valid_after(now + datetime.timedelta(days=days)))


def server_sans(node_ips: list[str], cluster_ip: str | None, domain: str = "cluster.local") -> list[str]:
    """The serving certificate's names: loopback, the control-plane node's address, the
    kubernetes Service's ClusterIP and its DNS names."""
    names = ["127.0.0.1", *node_ips, *([cluster_ip] if cluster_ip else []), "localhost", *SERVICE_NAMES,
             f"kubernetes.default.svc.{domain}"]
    return list(dict.fromkeys(names))


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _leaf(ca_key, ca_cert: x509.Certificate, subject: x509.Name, usage, sans: list[str] | None):
    key = _key()
    b = (_builder(subject, ca_cert.subject, key.public_key(), LEAF_DAYS)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if sans:
        b = b.add_extension(_san(sans), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def ensure(p: Paths, sans: list[str]) -> Paths:
    """The CA (kept if there is one: a converging `up` keeps the kubeconfig valid), and the
    serving and admin certificates, made again when missing or when the names changed."""
    p.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if p.ca_crt.exists() and p.ca_key.exists():
        ca_cert = x509.load_pem_x509_certificate(p.ca_crt.read_bytes())
        ca_key = serialization.load_pem_private_key(p.ca_key.read_bytes(), None)
    else:
        ca_key = _key()
        subject = _name("kubernetes")
        ca_cert = (_builder(subject, subject, ca_key.public_key(), CA_DAYS)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                                content_commitment=False, data_encipherment=False,
                                                key_agreement=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))
        _write(p.ca_key, _pem_key(ca_key))
        _write(p.ca_crt, ca_cert.public_bytes(serialization.Encoding.PEM))
        for stale in (p.server_crt, p.admin_crt):
            stale.unlink(missing_ok=True)
    if not p.server_crt.exists() or sorted(current_sans(p.server_crt)) != sorted(sans):
        key, cert = _leaf(ca_key, ca_cert, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
        _write(p.server_key, _pem_key(key))
        _write(p.server_crt, cert.public_bytes(serialization.Encoding.PEM))
    if not p.admin_crt.exists() or not p.admin_key.exists():
        key, cert = _leaf(ca_key, ca_cert, _name("kubernetes-admin", "system:masters"),
                          ExtendedKeyUsageOID.CLIENT_AUTH, None)
        _write(p.admin_key, _pem_key(key))
        _write(p.admin_crt, cert.public_bytes(serialization.Encoding.PEM))
    return p


def service_account_key(p: Paths) -> ec.EllipticCurvePrivateKey:
    """The token signing key, made on first use in the cluster's pki directory (a cluster made
    before tokens were served has none yet); FileNotFoundError when there is no such directory."""
    if not p.sa_key.exists():
        if not p.dir.is_dir():
            raise FileNotFoundError(f"{p.dir}: the cluster's pki directory does not exist")
        _write(p.sa_key, _pem_key(_key()))
    key = serialization.load_pem_private_key(p.sa_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{p.sa_key}: not an EC private key; fix: remove it, netsim makes a new one")
    return key


def current_sans(crt: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)
