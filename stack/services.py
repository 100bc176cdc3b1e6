"""Start, probe and stop the local services: Kafka (KRaft), s3proxy, Mosquitto and Prometheus.

Each service is a real server process started from the jars/binaries the project installed.
``start()`` is idempotent: a healthy running instance is reused; otherwise the process is started
in its own session, and ``start()`` waits for it to answer. A process that dies or never becomes
ready raises :class:`ServiceError` carrying the tail of its log. Data, logs and pid files live
under ``<home>/<service>/``.
"""
from __future__ import annotations

import base64
import hashlib
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

from stack import certs
from stack.flink_home import render_config
from vigil.settings import KafkaAddress, SettingsError, VigilSettings, write_secret_file


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
        running = self.launch()
        if running is None:
            return "reused"
        self.wait_ready(running, timeout)
        return "started"

    def launch(self) -> int | None:
        """Start the process unless it runs; its pid, or None when a healthy instance is reused.

        Does not wait for it to answer (``wait_ready``): a cluster launches all its members first,
        since none answers before a quorum of them runs.
        """
        if self.probe():
            self.after_start()
            return None
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
        return running

    def wait_ready(self, running: int, timeout: float | None = None) -> None:
        """Wait until the launched process ``running`` answers; ServiceError with its log tail otherwise."""
        timeout = self.startup_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(running):
                raise ServiceError(
                    f"{self.name} exited during start-up. Last lines of {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            if self.probe():
                self.after_start()
                return
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
    """One Apache Kafka node in KRaft mode (broker and controller in one process).

    With ``kafka.brokers = 1`` (the default) it is the single local broker, under ``<home>/kafka``;
    with more, node ``node`` (1-based) of a local cluster (:class:`KafkaCluster`), under
    ``<home>/kafka/node-<node>``, listening on ``kafka.port + 2(node-1)`` (controller:
    ``kafka.controller_port + 2(node-1)``). Topics get replication factor min(3, brokers) and
    min ISR 2 from three brokers on.

    ``kafka.security_protocol = SASL_SSL``: the client listener takes SASL/SCRAM over TLS only (the
    brokers' user, created when the storage is formatted, also carries the traffic between
    brokers), and the controller listener takes mutual TLS only (certificates of the local CA,
    stack/certs.py): an unauthenticated client is refused on every port.
    """

    name = "kafka"

    def __init__(self, settings: VigilSettings, node: int = 1) -> None:
        super().__init__(settings)
        nodes = settings.kafka.brokers
        if not 1 <= node <= nodes:
            raise ServiceError(f"kafka node {node} does not exist: kafka.brokers is {nodes}")
        self.node = node
        if nodes > 1:
            self.dir = settings.home / "kafka" / f"node-{node}"
            self.log_path = self.dir / "kafka.log"
            self.pid_path = self.dir / "kafka.pid"
        self.port, self.controller_port = settings.kafka.broker_ports()[node - 1]

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    @property
    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def connection(self) -> KafkaAddress:
        """This node alone, reached with the configured security (what the probe connects with)."""
        return KafkaAddress(self.settings.kafka.model_copy(update={"bootstrap_servers": self.address}))

    @property
    def _properties(self) -> Path:
        return self.dir / "server.properties"

    def _security_lines(self) -> list[str]:
        s, kafka = self.settings, self.settings.kafka
        client = f"{s.host}:{self.port}"
        controller = f"CONTROLLER://{s.host}:{self.controller_port}"
        if kafka.security_protocol == "PLAINTEXT":
            return [f"listeners=PLAINTEXT://{client},{controller}",
                    f"advertised.listeners=PLAINTEXT://{client}",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"]
        if kafka.security_protocol != "SASL_SSL":
            raise ServiceError(f"the local Kafka broker speaks PLAINTEXT or SASL_SSL, not {kafka.security_protocol}")
        try:
            user, password = kafka.require_sasl()
            tls = certs.files(s)
        except (SettingsError, certs.CertificateError) as exc:
            raise ServiceError(str(exc)) from None
        mechanism = kafka.sasl_mechanism
        awkward = sorted({c for c in user + password if c in ',[]="\\' or c.isspace()})
        if awkward:
            raise ServiceError(f"the local Kafka broker's SASL user and password may not contain {' '.join(awkward)!r} "
                               f"(the storage tool's SCRAM syntax); setup's generated login never does")

        def quoted(text: str) -> str:  # a JAAS string (StreamTokenizer: backslash escapes)
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        jaas = (f"org.apache.kafka.common.security.scram.ScramLoginModule required username={quoted(user)} "
                f"password={quoted(password)};")
        jaas = jaas.replace("\\", "\\\\").replace("\n", "\\n")  # then a .properties value
        store = tls.password.get_secret_value()
        return [f"listeners=SASL_SSL://{client},{controller}",
                f"advertised.listeners=SASL_SSL://{client}",
                "inter.broker.listener.name=SASL_SSL",
                "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL",
                f"sasl.enabled.mechanisms={mechanism}",
                f"sasl.mechanism.inter.broker.protocol={mechanism}",
                f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config={jaas}",
                # the controllers accept only peers holding a certificate of the local CA
                "listener.name.controller.ssl.client.auth=required",
                f"ssl.keystore.location={tls.keystore}", "ssl.keystore.type=PKCS12",
                f"ssl.keystore.password={store}", f"ssl.key.password={store}",
                f"ssl.truststore.location={tls.ca}", "ssl.truststore.type=PEM",
                "ssl.endpoint.identification.algorithm=https"]

    def _format_marker(self) -> str:
        """What the storage was formatted for: the controllers, and the SASL user created in it."""
        kafka = self.settings.kafka
        line = self._controllers()
        if kafka.security_protocol == "SASL_SSL":
            user, password = kafka.require_sasl()
            digest = hashlib.sha256(f"{kafka.sasl_mechanism}:{user}:{password}".encode()).hexdigest()[:16]
            line += f"\nSASL {kafka.sasl_mechanism} user={user} login={digest}"
        return line

    def _controllers(self) -> str:
        host = self.settings.host
        return ",".join(f"{host}:{c}" for _, c in self.settings.kafka.broker_ports())

    def prepare(self) -> None:
        s = self.settings
        data = self.dir / "data"
        nodes = s.kafka.brokers
        replicas, min_isr = min(3, nodes), (2 if nodes >= 3 else 1)
        if nodes == 1:
            quorum = [f"controller.quorum.bootstrap.servers={self._controllers()}"]
        else:
            quorum = ["controller.quorum.voters=" + ",".join(
                f"{i + 1}@{s.host}:{c}" for i, (_, c) in enumerate(s.kafka.broker_ports()))]
        write_secret_file(  # owner-only: with SASL_SSL it holds the brokers' login and keystore password
            self._properties,
            "\n".join(
                [
                    "# written by stack/services.py; edit the settings, not this file",
                    "process.roles=broker,controller",
                    f"node.id={self.node}",
                    *quorum,
                    *self._security_lines(),
                    "controller.listener.names=CONTROLLER",
                    f"log.dirs={data}",
                    "num.partitions=3",
                    # topics are created explicitly (connectors/topics.py) so a typo fails loudly
                    "auto.create.topics.enable=false",
                    f"default.replication.factor={replicas}",
                    f"min.insync.replicas={min_isr}",
                    f"offsets.topic.replication.factor={replicas}",
                    f"transaction.state.log.replication.factor={replicas}",
                    f"transaction.state.log.min.isr={min_isr}",
                    f"share.coordinator.state.topic.replication.factor={replicas}",
                    f"share.coordinator.state.topic.min.isr={min_isr}",
                    "group.initial.rebalance.delay.ms=0",
                    # Flink's exactly-once KafkaSink defaults to a 1 h transaction timeout
                    "transaction.max.timeout.ms=3600000",
                    # The model trains from the log, and simulated or replayed events carry their
                    # original (often old) timestamps: time-based retention would delete them at once.
                    "log.retention.ms=-1",
                    "",
                ]
            ),
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
        wanted = self._format_marker()
        if (data / "meta.properties").exists():
            had = marker.read_text().strip().splitlines() if marker.exists() else []
            want = wanted.splitlines()
            if had and had[0] != want[0]:
                raise ServiceError(
                    f"the Kafka data in {data} was formatted for controller(s) {had[0]}, not {want[0]}; use the "
                    f"old ports or remove the data with `python -m stack down --purge`"
                )
            if len(want) > 1 and had[1:] != want[1:]:
                raise ServiceError(
                    f"the Kafka data in {data} was formatted without the SASL login now configured (brokers "
                    f"authenticate each other with it, and SCRAM users are created when storage is formatted); "
                    f"remove the data with `python -m stack down --purge`, or use another VIGIL_HOME")
            return
        cluster_id = self._cluster_id()
        command = [_java(), "-cp", _jars(self.settings.downloads / "kafka"), *self._jvm_flags(),
                   "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self._properties)]
        if nodes == 1:
            command.append("--standalone")
        argfile = self.dir / "format.args"
        if s.kafka.security_protocol == "SASL_SSL":
            user, password = s.kafka.require_sasl()
            command += ["--add-scram", f"{s.kafka.sasl_mechanism}=[name={user},password={password}]"]
            # Not on the command line (any local user can read /proc/<pid>/cmdline): the java
            # launcher reads the arguments from an owner-only @argfile, removed right after.
            write_secret_file(argfile, "\n".join(_argfile_quoted(a) for a in command[1:]) + "\n")
            command = [command[0], f"@{argfile}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, cwd=self.dir)
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shown = result.stdout + result.stderr
            if s.kafka.security_protocol == "SASL_SSL":
                shown = shown.replace(s.kafka.require_sasl()[1], "**********")
            raise ServiceError(f"formatting Kafka storage in {data} failed:\n{shown}")
        write_secret_file(marker, wanted + "\n")

    def _cluster_id(self) -> str:
        """A new cluster id; the nodes of one local cluster share theirs (``<home>/kafka/cluster-id``)."""
        if self.settings.kafka.brokers == 1:
            return new_cluster_id()
        path = self.settings.home / "kafka" / "cluster-id"
        if not path.exists() or path.read_text().strip().startswith("-"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    def _jvm_flags(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}"]

    def command(self) -> list[str]:
        heap = "-Xmx768m" if self.settings.kafka.brokers == 1 else "-Xmx512m"
        return [
            _java(), "-Xms256m", heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            *self._jvm_flags(), "-cp", _jars(self.settings.downloads / "kafka"),
            "kafka.Kafka", str(self._properties),
        ]

    def probe(self) -> bool:
        if not port_open(self.settings.host, self.port):
            return False
        from confluent_kafka.admin import AdminClient

        from connectors.kafka_io import client_config

        try:
            admin = AdminClient(client_config(self.connection))
            admin.list_topics(timeout=3)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False


def _argfile_quoted(arg: str) -> str:
    """One argument of a java launcher @argfile: double-quoted, backslashes and quotes escaped."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64url of 16 bytes) that does not start with '-'.

    Kafka's own ``Uuid.randomUuid`` skips those too: the storage tool's argument parser would take
    such an id (``-t -abc...``) for an option and refuse to format (about one id in 64).
    """
    while True:
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not made.startswith("-"):
            return made


class KafkaCluster:
    """The local Kafka cluster: ``kafka.brokers`` KRaft nodes (:class:`KafkaBroker`), started together.

    What ``python -m stack up kafka`` starts. One broker is the single local broker; three make a
    cluster with replication factor 3 and min ISR 2, on which one broker may be down without
    stopping producers (acks=all) or exactly-once sinks. ``nodes`` gives each broker, to stop or
    restart one alone (fault injection).
    """

    name = "kafka"

    def __init__(self, settings: VigilSettings) -> None:
        self.settings = settings
        self.nodes = [KafkaBroker(settings, node) for node in range(1, settings.kafka.brokers + 1)]
        ports = [p for n in self.nodes for p in n.ports]
        if len(set(ports)) != len(ports):
            raise ServiceError(f"the local Kafka brokers' ports collide ({ports}): kafka.port and "
                               f"kafka.controller_port must be at least 2 x kafka.brokers apart")

    @property
    def address(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def start(self, timeout: float | None = None) -> str:
        """Launch every node not running, then wait until all answer; 'reused' when all were healthy."""
        launched = [(node, node.launch()) for node in self.nodes]
        for node, pid in launched:
            if pid is not None:
                node.wait_ready(pid, timeout)
        return "reused" if all(pid is None for _, pid in launched) else "started"

    def stop(self, timeout: float = 30.0) -> bool:
        stopped = [node.stop(timeout) for node in self.nodes]
        return any(stopped)

    def probe(self) -> bool:
        return all(node.probe() for node in self.nodes)

    def status(self) -> str:
        if len(self.nodes) == 1:
            return self.nodes[0].status()
        return "; ".join(f"node {n.node}: {n.status()}" for n in self.nodes)


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
    """The Eclipse Mosquitto MQTT broker from Debian's package, on loopback.

    Anonymous by default. With ``mqtt.username`` and ``mqtt.password`` set it accepts that user
    only: a password file (``<home>/mosquitto/passwords``, 0600, Mosquitto's own PBKDF2-SHA512
    format) and ``allow_anonymous false``.
    """

    name = "mosquitto"
    startup_timeout_s = 20.0

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.mqtt.port}"

    @property
    def ports(self) -> list[int]:
        return [self.settings.mqtt.port]

    @property
    def password_file(self) -> Path:
        return self.dir / "passwords"

    def prepare(self) -> None:
        mqtt = self.settings.mqtt
        lines = [f"listener {mqtt.port} {self.settings.host}"]
        if mqtt.username and mqtt.password:
            write_secret_file(self.password_file,
                              f"{mqtt.username}:{mosquitto_password_hash(mqtt.password.get_secret_value())}\n")
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
            if os.geteuid() == 0:
                # Started as root, Mosquitto drops to its own user before it reads the password file:
                # give the file to that user, or stay root where that user cannot reach the folder.
                import pwd

                try:
                    owner = pwd.getpwnam("mosquitto")
                    os.chown(self.password_file, owner.pw_uid, owner.pw_gid)
                    reachable = all(folder.stat().st_mode & 0o001 for folder in self.password_file.parents)
                except KeyError:
                    reachable = False
                if not reachable:
                    lines.append("user root")
        else:
            self.password_file.unlink(missing_ok=True)
            lines.append("allow_anonymous true")
        (self.dir / "mosquitto.conf").write_text("\n".join([*lines, "persistence false", "log_dest stdout", ""]))

    def command(self) -> list[str]:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise ServiceError("mosquitto is not installed; run `make setup` (apt-get install mosquitto)")
        return [binary, "-c", str(self.dir / "mosquitto.conf")]

    def probe(self) -> bool:
        return port_open(self.settings.host, self.settings.mqtt.port)


def mosquitto_password_hash(password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """A password-file entry as ``mosquitto_passwd`` writes it (Mosquitto 2: ``$7$``, PBKDF2-HMAC-SHA512).

    Made here so the password never appears on a command line.
    """
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


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


SERVICES: dict[str, type[Service] | type[KafkaCluster]] = {"kafka": KafkaCluster, "s3": S3Server,
                                                           "mosquitto": Mosquitto, "prometheus": Prometheus}
