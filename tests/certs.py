"""A throwaway certificate authority for TLS tests, minted at run time with ``cryptography``."""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _sign(subject: str, key, issuer_name, issuer_key, *, ca: bool, usage=None, hosts=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        names = [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h)
                 for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class ThrowawayCA:
    """``ca.pem``; ``server.pem``/``server.key`` for 127.0.0.1 and localhost; a client pair."""

    def __init__(self, directory: Path, name: str = "test-ca"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        cert = _sign(name, self.key, self.name, self.key, ca=True)
        self.ca_cert = self.directory / f"{name}.pem"
        self.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, usage, hosts=()) -> tuple[Path, Path]:
        """(certificate file, key file) signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(stem, key, self.name, self.key, ca=False, usage=usage, hosts=hosts)
        cert_path = self.directory / f"{stem}.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, _write_key(key, self.directory / f"{stem}.key")

    def server_pair(self) -> tuple[Path, Path]:
        return self.issue("server", ExtendedKeyUsageOID.SERVER_AUTH, ("127.0.0.1", "localhost"))

    def client_pair(self, stem: str = "client") -> tuple[Path, Path]:
        return self.issue(stem, ExtendedKeyUsageOID.CLIENT_AUTH)
