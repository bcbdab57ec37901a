"""Fixtures of the scenario tests: the bundled chat server (plain, header-checking, TLS) and a throw-away CA."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import free_port, stop_process, wait_for_port


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it (cryptography, no openssl CLI)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "soak-runner test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server-key.pem")
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class ChatServer:
    """The bundled chat target in a subprocess on 127.0.0.1."""

    def __init__(self, *args: str, tls: bool = False) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runner.targets.chat", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, timeout=60)  # a loaded CI machine can take long to start Python
        except BaseException:
            self.stop()
            raise
        self.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer("--require-header", "X-Soak-User")
    yield server
    server.stop()


@pytest.fixture
def open_chat_server() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.stop()


@pytest.fixture
def tls_chat_server(certificates: Certificates) -> Iterator[ChatServer]:
    server = ChatServer("--certfile", str(certificates.cert), "--keyfile", str(certificates.key), tls=True)
    yield server
    server.stop()


class RecordingEvents:
    """The slice of Locust's event hooks a scenario fires (``events.request.fire``), kept as a list.

    Importing Locust would monkey-patch this whole pytest process for gevent, so the unit-level
    tests record the request events here; the end-to-end tests run real Locust via ``soak run``.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.request = self

    def fire(self, **kwargs: Any) -> None:
        self.requests.append(kwargs)


class RecordingUser:
    """What :meth:`ScenarioPlan.run_cycle` needs of a Locust user: its environment's events and the counters."""

    def __init__(self) -> None:
        from runner.load.counters import LoadCounters

        self.counters = LoadCounters()
        self.environment = type("Env", (), {})()
        self.environment.events = RecordingEvents()

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.environment.events.requests

    def outcome(self) -> dict[str, str | None]:
        """{request name: None on success, else the error text}; later events of one name win."""
        return {r["name"]: (None if r["exception"] is None else str(r["exception"])) for r in self.requests}
