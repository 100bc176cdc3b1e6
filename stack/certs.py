"""The local stack's TLS material: one private CA and one loopback server certificate, made at setup.

Everything lives in ``<home>/secrets/tls/`` (0700, files 0600):

* ``ca.pem``: the CA certificate every client trusts (librdkafka ``ssl.ca.location``, Java Kafka
  clients ``ssl.truststore.type=PEM``, Python ``ssl`` contexts): the ``kafka.ssl_ca_file`` default;
* ``ca.key``: the CA's key, kept so a server certificate can be issued again for another host;
* ``server.p12``: PKCS#12 keystore with the server key and certificate (subject alternative names:
  the configured host, 127.0.0.1 and localhost; usable for server and client auth): the Kafka
  brokers' listeners (clients, and the controllers' mutual TLS) and Flink's REST endpoint;
* ``truststore.p12``: a Java truststore (PKCS#12 with the CA as a trusted entry) for Flink's REST
  clients (``flink run``, the web UI's own calls);
* ``tls.json``: the password of both keystores (never printed).

``ensure()`` is idempotent: it creates what is missing and issues the server certificate again when
it does not cover the configured host or expires within 30 days.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from vigil.settings import TLS_DIR, VigilSettings, write_secret_file

CA_FILE = "ca.pem"
_VALID_DAYS = 825
_RENEW_DAYS = 30


class CertificateError(RuntimeError):
    """The TLS material is missing or unusable; the message says what to run."""


@dataclass(frozen=True)
class TlsFiles:
    """Where the local TLS material is, and the keystores' password."""

    folder: Path
    password: SecretStr

    @property
    def ca(self) -> Path:
        return self.folder / CA_FILE

    @property
    def keystore(self) -> Path:
        return self.folder / "server.p12"

    @property
    def truststore(self) -> Path:
        return self.folder / "truststore.p12"


def folder(settings: VigilSettings) -> Path:
    return settings.secrets_dir / TLS_DIR


def files(settings: VigilSettings) -> TlsFiles:
    """The existing TLS material; CertificateError naming the command that makes it otherwise."""
    where = folder(settings)
    try:
        password = json.loads((where / "tls.json").read_text())["password"]
    except (OSError, ValueError, KeyError):
        raise CertificateError(f"no TLS material in {where}; run `python -m stack setup`, which makes the "
                               f"local CA and server certificate") from None
    made = TlsFiles(where, SecretStr(password))
    for path in (made.ca, made.keystore, made.truststore):
        if not path.is_file():
            raise CertificateError(f"{path} is missing; run `python -m stack setup` again")
    return made


def ensure(settings: VigilSettings) -> TlsFiles:
    """Create the CA, the server certificate and the keystores where missing or stale (see the module)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    where = folder(settings)
    where.mkdir(parents=True, exist_ok=True)
    settings.secrets_dir.chmod(0o700)
    where.chmod(0o700)
    now = dt.datetime.now(dt.timezone.utc)

    ca_pem, ca_key_path = where / CA_FILE, where / "ca.key"
    if ca_pem.is_file() and ca_key_path.is_file():
        ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    else:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # a common name holds at most 64 characters: the home's path can be longer
        home_digest = hashlib.sha256(str(settings.home).encode()).hexdigest()[:12]
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Vigil local CA {home_digest}"),
                          x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _fit(str(settings.home)))])
        ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        write_secret_file(ca_key_path, ca_key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()).decode())
        write_secret_file(ca_pem, ca_cert.public_bytes(serialization.Encoding.PEM).decode())
        for stale in ("server.p12", "truststore.p12"):
            (where / stale).unlink(missing_ok=True)

    try:
        password = json.loads((where / "tls.json").read_text())["password"]
    except (OSError, ValueError, KeyError):
        password = secrets.token_urlsafe(24)
        write_secret_file(where / "tls.json", json.dumps({"password": password}) + "\n")
    made = TlsFiles(where, SecretStr(password))

    def protection():
        return (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(50_000)
                .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
                .build(password.encode()))

    names = _alt_names(settings.host)
    if not _server_certificate_fits(made, password, names, now):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _fit(settings.host))]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        keystore = pkcs12.serialize_key_and_certificates(b"vigil", key, cert, [ca_cert], protection())
        _write_bytes(made.keystore, keystore)
    if not made.truststore.is_file():
        truststore = pkcs12.serialize_java_truststore([pkcs12.PKCS12Certificate(ca_cert, b"vigil-ca")], protection())
        _write_bytes(made.truststore, truststore)
    return made


def _fit(text: str, limit: int = 64) -> str:
    """``text`` cut to an X.509 name attribute's 64 characters (its end kept, where paths differ)."""
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _alt_names(host: str) -> list:
    from cryptography import x509

    names: list = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        address = ipaddress.ip_address(host)
        if address != ipaddress.ip_address("127.0.0.1"):
            names.append(x509.IPAddress(address))
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    return names


def _server_certificate_fits(made: TlsFiles, password: str, names: list, now: dt.datetime) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs12

    if not made.keystore.is_file():
        return False
    try:
        _key, cert, _extra = pkcs12.load_key_and_certificates(made.keystore.read_bytes(), password.encode())
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return all(n in have for n in names) and cert.not_valid_after_utc - now > dt.timedelta(days=_RENEW_DAYS)


def _write_bytes(path: Path, data: bytes) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
