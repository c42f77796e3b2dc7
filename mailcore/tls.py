"""TLS for every listener: load the configured certificate, or make (once) a self-signed one for --dev.

Owns certificate files and `ssl.SSLContext` construction; listeners only receive a context.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from config.settings import TLSSettings


class TLSConfigError(Exception):
    """Certificates missing or unusable; the text names the setting."""


def certificate_paths(tls: TLSSettings, data_dir: str | Path, hostname: str) -> tuple[Path, Path] | None:
    """The (certificate, key) files to use, generating a self-signed pair if so configured; None: no TLS."""
    if tls.cert_file:
        cert, key = Path(tls.cert_file), Path(tls.key_file or tls.cert_file)
        for path, name in ((cert, "tls.cert_file"), (key, "tls.key_file")):
            if not path.is_file():
                raise TLSConfigError(f"{name}: {path} does not exist")
        return cert, key
    if not tls.self_signed:
        return None
    folder = Path(data_dir) / "tls"
    cert, key = folder / "selfsigned.crt", folder / "selfsigned.key"
    if not (cert.is_file() and key.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        cert_pem, key_pem = make_self_signed(hostname)
        key.write_bytes(key_pem)
        os.chmod(key, 0o600)
        cert.write_bytes(cert_pem)
    return cert, key


def make_self_signed(hostname: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for `hostname`, localhost and loopback, valid ten years (PEM cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                    x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context with modern defaults (TLS 1.2+)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"tls.cert_file: cannot load {cert} with {key}: {exc}") from exc
    return ctx
