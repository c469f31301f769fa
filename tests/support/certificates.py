"""Throw-away TLS for loopback test servers: a CA of its own and a server certificate it signs.

    context, ca_path = server_tls(folder)                       # for 127.0.0.1 and localhost
    context, ca_path = server_tls(folder, ["api.provider.test"])  # for a name the test resolves itself

A client trusts the server with SSL_CERT_FILE=ca_path (or `verify=ca_path`). A separate CA, rather
than one self-signed leaf, keeps strict X.509 verification happy.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def server_tls(folder: Path, names: Sequence[str] = LOOPBACK_NAMES) -> tuple[ssl.SSLContext, Path]:
    """A server context whose certificate carries `names` (IP addresses or DNS names) and nothing else,
    and the path of the PEM of the CA that signed it; the files are written into `folder`."""
    ca_path, cert_path, key_path = _write_certificates(folder, names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, ca_path


def _write_certificates(folder: Path, names: Sequence[str]) -> tuple[Path, Path, Path]:
    """ca.pem, cert.pem and key.pem in `folder`: a CA and a server certificate for `names` signed by it."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopback test CA")])
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    leaf = (
        _builder(leaf_name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and revocation lists; a server certificate only its handshakes."""
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    only_with_key_agreement = ("encipher_only", "decipher_only")
    flags = dict.fromkeys(unused + only_with_key_agreement, False)
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, **flags)
