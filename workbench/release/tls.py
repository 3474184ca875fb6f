"""TLS for deployed database pools: one CA per environment, a key and certificate per member, made at deploy time.

    <state_dir>/secrets/<env>/ca.key              mode 0600, never leaves the host
    <state_dir>/secrets/<env>/ca.crt
    <state_dir>/secrets/<env>/tls/<member>/       mode 0700, mounted read-only at /run/workbench/tls
        server.key (0600), server.crt, ca.crt

A member's certificate names it as the other members and clients reach it
(`db1`, `db1.staging.wpdn`), so a replica verifies its primary's name. Nothing
of it is in an image; the db role's start hook installs the files for MariaDB.
Made with Python's `cryptography` (a dependency of Fabric's paramiko).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workbench.core import secrets
from workbench.core.config import Config

CA_DAYS = 3650
MEMBER_DAYS = 825
# A certificate closer than this to its end is made again at the next deploy.
RENEW_BEFORE = datetime.timedelta(days=30)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def authority(config: Config, env: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The environment's CA (made on first use): its key and certificate."""
    folder = secrets.directory(config, env)
    key_path, cert_path = folder / "ca.key", folder / "ca.crt"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if isinstance(key, ec.EllipticCurvePrivateKey) and _fresh(cert):
            return key, cert
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"workbench {config.prefix} {env} CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    secrets.write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def member_files(config: Config, env: str, member: str, names: Sequence[str]) -> Path:
    """The member's TLS directory (server.key, server.crt, ca.crt), made or renewed as needed."""
    ca_key, ca_cert = authority(config, env)
    folder = secrets.directory(config, env) / "tls" / member
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    if cert_path.exists() and key_path.exists() and (folder / "ca.crt").read_bytes() == ca_pem:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        wanted = sorted(names)
        have = sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                      .get_values_for_type(x509.DNSName))
        if have == wanted and _fresh(cert):
            return folder
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=MEMBER_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                              x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    secrets.write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "ca.crt").write_bytes(ca_pem)
    return folder
