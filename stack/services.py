"""Start, probe and stop the local services: Kafka (KRaft), s3proxy, Mosquitto and Prometheus.

Each service is a real server process started from the jars/binaries the project installed.
``start()`` is idempotent: a healthy running instance is reused; otherwise the process is started
in its own session, and ``start()`` waits for it to answer. A process that dies or never becomes
ready raises :class:`ServiceError` carrying the tail of its log. Data, logs and pid files live
under ``<home>/<service>/``.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import yaml

from stack.flink_home import render_config
from vigil.settings import SettingsError, VigilSettings, write_secret_file


class ServiceError(RuntimeError):
    """A service could not be started, reached or stopped."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


class Service:
    """One long-running local server process."""

    name: str = ""
    startup_timeout_s: float = 90.0

    def __init__(self, settings: VigilSettings) -> None:
        self.settings = settings
        self.dir = settings.home / self.name
        self.log_path = self.dir / f"{self.name}.log"
        self.pid_path = self.dir / f"{self.name}.pid"

    # --- to be provided by each service -----------------------------------------------------
    @property
    def address(self) -> str:
        raise NotImplementedError

    @property
    def ports(self) -> list[int]:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files and initialise storage before the first start."""

    def probe(self) -> bool:
        """True when the service answers its protocol."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Work that needs the running server (e.g. create the bucket)."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    # --- lifecycle ----------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self, timeout: float | None = None) -> str:
        """Start the service (or reuse a healthy one); returns 'reused' or 'started'."""
        timeout = self.startup_timeout_s if timeout is None else timeout
        if self.probe():
            self.after_start()
            return "reused"
        running = self.pid()
        if running is None:
            busy = [p for p in self.ports if port_open(self.settings.host, p)]
            if busy:
                raise ServiceError(
                    f"{self.name}: port(s) {busy} on {self.settings.host} are taken by another program "
                    f"that does not answer as {self.name}; stop it or choose other ports "
                    f"(see the VIGIL_* variables in vigil/settings.py)."
                )
            self.dir.mkdir(parents=True, exist_ok=True)
            self.prepare()
            with open(self.log_path, "ab") as log:
                log.write(f"\n--- starting {self.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
                log.flush()
                proc = subprocess.Popen(
                    self.command(),
                    cwd=self.dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.environment(),
                    start_new_session=True,
                )
            self.pid_path.write_text(str(proc.pid))
            running = proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(running):
                raise ServiceError(
                    f"{self.name} exited during start-up. Last lines of {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            if self.probe():
                self.after_start()
                return "started"
            time.sleep(0.5)
        raise ServiceError(
            f"{self.name} did not become ready at {self.address} within {timeout:.0f}s. "
            f"Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the service started by this project; returns False when none was running."""
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.5)
        self.pid_path.unlink(missing_ok=True)
        return True

    def status(self) -> str:
        if self.probe():
            return f"up at {self.address}"
        if self.pid() is not None:
            return f"process {self.pid()} running but not answering at {self.address}"
        return "down"


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError("java was not found on PATH; OpenJDK 17 is required (apt-get install openjdk-17-jre-headless)")
    return java


def _jars(folder: Path) -> str:
    if not folder.is_dir() or not any(folder.glob("*.jar")):
        raise ServiceError(f"no jars in {folder}; run `make setup` (python -m stack setup) first")
    return str(folder / "*")


class KafkaBroker(Service):
    """A single-node Apache Kafka broker in KRaft mode (broker and controller in one process)."""

    name = "kafka"

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.kafka.port}"

    @property
    def ports(self) -> list[int]:
        return [self.settings.kafka.port, self.settings.kafka.controller_port]

    @property
    def _properties(self) -> Path:
        return self.dir / "server.properties"

    def prepare(self) -> None:
        s = self.settings
        data = self.dir / "data"
        self._properties.write_text(
            "\n".join(
                [
                    "# written by stack/services.py; edit the settings, not this file",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers={s.host}:{s.kafka.controller_port}",
                    f"listeners=PLAINTEXT://{s.host}:{s.kafka.port},CONTROLLER://{s.host}:{s.kafka.controller_port}",
                    f"advertised.listeners=PLAINTEXT://{s.host}:{s.kafka.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=3",
                    # topics are created explicitly (connectors/topics.py) so a typo fails loudly
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    # Flink's exactly-once KafkaSink defaults to a 1 h transaction timeout
                    "transaction.max.timeout.ms=3600000",
                    # The model trains from the log, and simulated or replayed events carry their
                    # original (often old) timestamps: time-based retention would delete them at once.
                    "log.retention.ms=-1",
                    "",
                ]
            )
        )
        (self.dir / "log4j2.properties").write_text(
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.stdout.ref = STDOUT\n"
            "appender.stdout.type = Console\n"
            "appender.stdout.name = STDOUT\n"
            "appender.stdout.layout.type = PatternLayout\n"
            "appender.stdout.layout.pattern = [%d] %p %m (%c)%n\n"
            "logger.kafka.name = kafka\nlogger.kafka.level = WARN\n"
            "logger.org.name = org.apache.kafka\nlogger.org.level = WARN\n"
            "logger.server.name = kafka.server.KafkaServer\nlogger.server.level = INFO\n"
        )
        marker = self.dir / "formatted-for"
        wanted = f"{s.host}:{s.kafka.controller_port}"
        if (data / "meta.properties").exists():
            if marker.exists() and marker.read_text().strip() != wanted:
                raise ServiceError(
                    f"the Kafka data in {data} was formatted for controller {marker.read_text().strip()}, "
                    f"not {wanted}; use the old ports or remove the data with `python -m stack down --purge`"
                )
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [_java(), "-cp", _jars(self.settings.downloads / "kafka"), *self._jvm_flags(),
             "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id, "-c", str(self._properties)],
            capture_output=True, text=True, cwd=self.dir,
        )
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka storage in {data} failed:\n{result.stdout}\n{result.stderr}")
        marker.write_text(wanted)

    def _jvm_flags(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}"]

    def command(self) -> list[str]:
        return [
            _java(), "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            *self._jvm_flags(), "-cp", _jars(self.settings.downloads / "kafka"),
            "kafka.Kafka", str(self._properties),
        ]

    def probe(self) -> bool:
        if not port_open(self.settings.host, self.settings.kafka.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.address, "log_level": 0})
        try:
            admin.list_topics(timeout=3)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False


class S3Server(Service):
    """s3proxy, a real S3 API server, storing objects as files under ``<home>/s3/data``."""

    name = "s3"

    @property
    def address(self) -> str:
        return f"http://{self.settings.host}:{self.settings.s3.port}"

    @property
    def ports(self) -> list[int]:
        return [self.settings.s3.port]

    def prepare(self) -> None:
        s = self.settings
        try:
            access_key, secret_key = s.s3.require_credentials()
        except SettingsError as exc:
            raise ServiceError(str(exc)) from None
        (self.dir / "data").mkdir(exist_ok=True)
        write_secret_file(self.dir / "s3proxy.properties", "\n".join([
            f"s3proxy.endpoint=http://{s.host}:{s.s3.port}",
            "s3proxy.authorization=aws-v2-or-v4",
            f"s3proxy.identity={access_key}",
            f"s3proxy.credential={secret_key}",
            "jclouds.provider=filesystem",
            f"jclouds.filesystem.basedir={self.dir / 'data'}",
            "",
        ]))
        (self.dir / "logback.xml").write_text(
            "<configuration>\n"
            "  <appender name=\"OUT\" class=\"ch.qos.logback.core.ConsoleAppender\">\n"
            "    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{20} - %msg%n</pattern></encoder>\n"
            "  </appender>\n"
            "  <root level=\"INFO\"><appender-ref ref=\"OUT\"/></root>\n"
            "  <logger name=\"org.gaul.shaded\" level=\"WARN\"/>\n"
            "</configuration>\n"
        )

    def command(self) -> list[str]:
        return [
            _java(), "-Xmx256m", f"-Dlogback.configurationFile={self.dir / 'logback.xml'}",
            "-cp", _jars(self.settings.downloads / "s3proxy"),
            "org.gaul.s3proxy.Main", "--properties", str(self.dir / "s3proxy.properties"),
        ]

    def probe(self) -> bool:
        if not port_open(self.settings.host, self.settings.s3.port):
            return False
        try:
            urllib.request.urlopen(self.address + "/", timeout=2)
        except urllib.error.HTTPError:
            return True  # an S3 error document (403 for an anonymous request) is an answer
        except OSError:
            return False
        return True

    def after_start(self) -> None:
        from connectors.object_store import s3_filesystem

        local = self.settings.s3.model_copy(update={"endpoint": self.address})
        try:
            s3_filesystem(local).create_dir(self.settings.s3.bucket)
        except OSError as exc:
            raise ServiceError(f"s3 at {self.address} is up but bucket {self.settings.s3.bucket!r} "
                               f"could not be created: {exc}") from exc


class Mosquitto(Service):
    """The Eclipse Mosquitto MQTT broker from Debian's package, on loopback."""

    name = "mosquitto"
    startup_timeout_s = 20.0

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.mqtt.port}"

    @property
    def ports(self) -> list[int]:
        return [self.settings.mqtt.port]

    def prepare(self) -> None:
        (self.dir / "mosquitto.conf").write_text(
            f"listener {self.settings.mqtt.port} {self.settings.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stdout\n"
        )

    def command(self) -> list[str]:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise ServiceError("mosquitto is not installed; run `make setup` (apt-get install mosquitto)")
        return [binary, "-c", str(self.dir / "mosquitto.conf")]

    def probe(self) -> bool:
        return port_open(self.settings.host, self.settings.mqtt.port)


def parse_ports(spec: str) -> list[int]:
    """The ports of a Flink port setting: ``9250``, ``9250-9260``, ``9250,9252-9254``."""
    ports: list[int] = []
    for part in str(spec).split(","):
        low, _, high = part.strip().partition("-")
        ports += range(int(low), int(high or low) + 1)
    return ports


class Prometheus(Service):
    """The Prometheus server from Debian's package, on loopback, scraping the local Flink JVMs.

    Its targets are every port of the Prometheus reporter's range in the local Flink config
    (flink-conf/config.local.yaml): the embedded mini-cluster and the standalone cluster each take
    the first free port of that range, so a target that is down is simply a JVM not running now.
    Config in ``<home>/prometheus/prometheus.yml``, data in ``<home>/prometheus/data``.
    """

    name = "prometheus"
    startup_timeout_s = 30.0
    scrape_interval = "5s"  # as the compose cluster's docker/prometheus.yml
    retention = "7d"

    def __init__(self, settings: VigilSettings) -> None:
        super().__init__(settings)
        self.port = settings.prometheus.port  # VIGIL_PROMETHEUS_PORT
        self.config_path = self.dir / "prometheus.yml"

    @property
    def address(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def ports(self) -> list[int]:
        return [self.port]

    def flink_targets(self) -> list[str]:
        """``host:port`` of every port the local Flink JVMs' Prometheus reporter may listen on."""
        prom = render_config(self.settings, profile="local").get("metrics", {}).get("reporter", {}).get("prom", {})
        if "port" not in prom:
            raise ServiceError("flink-conf/config.local.yaml configures no Prometheus reporter port "
                               "(metrics.reporter.prom.port); Prometheus would have nothing to scrape")
        return [f"{self.settings.host}:{port}" for port in parse_ports(prom["port"])]

    def render(self) -> dict:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": "15s"},
            "scrape_configs": [{
                "job_name": "flink-local",
                "static_configs": [{"targets": self.flink_targets()}],
            }],
        }

    def prepare(self) -> None:
        (self.dir / "data").mkdir(exist_ok=True)
        self.config_path.write_text("# written by stack/services.py (Prometheus); edit flink-conf/config.local.yaml "
                                    "or the service, not this file\n"
                                    + yaml.safe_dump(self.render(), sort_keys=False))

    def command(self) -> list[str]:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise ServiceError("prometheus is not installed; run `make setup` (apt-get install prometheus)")
        return [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.dir / 'data'}",
                f"--storage.tsdb.retention.time={self.retention}",
                f"--web.listen-address={self.settings.host}:{self.port}"]

    def probe(self) -> bool:
        """Ready (``/-/ready``) and ours: a Prometheus started with this service's config file.

        Debian's package also starts a system-wide Prometheus on 9090 where systemd runs; that one
        answers ``/-/ready`` too, but scrapes other targets, so it must not count as this service.
        """
        if not port_open(self.settings.host, self.port):
            return False
        try:
            with urllib.request.urlopen(self.address + "/-/ready", timeout=2) as response:
                if response.status != 200:
                    return False
            with urllib.request.urlopen(self.address + "/api/v1/status/flags", timeout=2) as response:
                flags = json.loads(response.read())["data"]
        except (OSError, ValueError, KeyError):
            return False
        return Path(flags.get("config.file", "")).resolve() == self.config_path.resolve()


SERVICES: dict[str, type[Service]] = {"kafka": KafkaBroker, "s3": S3Server, "mosquitto": Mosquitto,
                                      "prometheus": Prometheus}
