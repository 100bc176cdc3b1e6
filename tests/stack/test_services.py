"""The service manager against real processes: a second broker on other ports, start/stop, errors."""
from __future__ import annotations

import socket
import sys

import pytest

from stack.services import KafkaBroker, Service, ServiceError, port_open
from vigil.settings import VigilSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.kafka
def test_broker_on_configured_ports_starts_is_reused_and_stops(tmp_path, stack_settings: VigilSettings):
    settings = stack_settings.evolve(home=tmp_path, kafka__port=free_port(), kafka__controller_port=free_port())
    (tmp_path / "downloads").symlink_to(stack_settings.downloads)
    broker = KafkaBroker(settings)
    try:
        assert broker.start() == "started"
        assert broker.probe()
        assert broker.start() == "reused"
        assert (tmp_path / "kafka" / "data" / "meta.properties").exists()
    finally:
        assert broker.stop() is True
    assert not port_open("127.0.0.1", settings.kafka.port)
    assert broker.stop() is False


class _Crashing(Service):
    name = "crashing"

    @property
    def address(self) -> str:
        return "nowhere"

    @property
    def ports(self) -> list[int]:
        return []

    def command(self) -> list[str]:
        return [sys.executable, "-c", "print('boom: bad config line 3'); raise SystemExit(3)"]

    def probe(self) -> bool:
        return False


def test_a_service_that_dies_reports_its_log_tail(tmp_path):
    service = _Crashing(VigilSettings.load({"home": tmp_path}))
    with pytest.raises(ServiceError, match="(?s)exited during start-up.*boom: bad config line 3"):
        service.start(timeout=20)


def test_a_port_taken_by_another_program_is_named(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = KafkaBroker(VigilSettings.load({"home": tmp_path, "kafka.port": port,
                                                "kafka.controller_port": free_port()}))
        with pytest.raises(ServiceError, match=f"port\\(s\\) \\[{port}\\]"):
            broker.start(timeout=5)


def test_settings_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path))
    monkeypatch.setenv("VIGIL_KAFKA_PORT", "19092")
    settings = VigilSettings.load()
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.downloads == tmp_path / "downloads"
    monkeypatch.setenv("VIGIL_KAFKA_PORT", "99999")
    with pytest.raises(ValueError):
        VigilSettings.load()
    monkeypatch.setenv("VIGIL_S3_SECRET_KEY", "do-not-show-me")
    monkeypatch.setenv("VIGIL_KAFKA_PORT", "19092")
    assert "do-not-show-me" not in repr(VigilSettings.load())


def test_a_new_kafka_cluster_id_never_starts_with_a_dash(monkeypatch):
    """The storage tool would read `-t -xyz` as an option and refuse to format (one id in 64 did)."""
    import base64
    import uuid

    from stack import services

    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(services.uuid, "uuid4", lambda: next(drawn))
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")
    assert services.new_cluster_id() == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")
