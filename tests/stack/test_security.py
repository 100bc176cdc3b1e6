"""Authentication on loopback as in production: Kafka SASL/SCRAM over TLS, Mosquitto with a password
file, Flink's REST API over https; every client of the project configured from one function.

A second local broker runs here with ``kafka.security_protocol = SASL_SSL`` (its own home, free ports,
secrets and certificates made the way `python -m stack setup` makes them): clients without the login
are refused, the project's clients and a scoring job (its own process, the embedded mini-cluster)
work through it. Plaintext stays the default everywhere else in the tests.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from confluent_kafka.admin import AdminClient

from connectors import flink_kafka, schema_store
from connectors.avro_serde import feature_columns, load_schema
from connectors.errors import BrokerUnavailable
from connectors.kafka_io import AvroProducer, check_broker, client_config, create_topic, read_all
from connectors.records import outputs
from jobs import run_sql, simulation
from stack import certs
from stack.__main__ import make_secrets
from stack.flink_cluster import LocalFlinkCluster
from stack.services import KafkaCluster, Mosquitto, ServiceError
from tests.contract import read_checked
from tests.stack.cluster_fixture import flink_cluster, free_port  # noqa: F401 - the fixture
from tests.trained_model import REF
from vigil.settings import PROJECT_ROOT, KafkaAddress, SettingsError, VigilSettings

SECRET_PASSWORD = "s3cr3t-!-pa$$word"


def _sasl_settings(home: Path, **overrides) -> VigilSettings:
    port = free_port()
    return VigilSettings.load({"home": home, "kafka.port": port, "kafka.controller_port": port + 1,
                               "kafka.security_protocol": "SASL_SSL", **overrides})


# --- one function configures every client ---------------------------------------------------------

def test_client_config_follows_the_settings_and_keeps_the_password_out_of_job_graphs(tmp_path):
    plain = VigilSettings.load({"home": tmp_path, "kafka.bootstrap_servers": "127.0.0.1:1"})
    assert client_config(plain.bootstrap_servers) == {"bootstrap.servers": "127.0.0.1:1", "log_level": 0}
    assert flink_kafka.client_properties(plain.bootstrap_servers) == {"bootstrap.servers": "127.0.0.1:1"}

    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    s = VigilSettings.load({"home": tmp_path, "kafka.bootstrap_servers": "127.0.0.1:1",
                            "kafka.security_protocol": "SASL_SSL", "kafka.sasl_username": "alice",
                            "kafka.sasl_password": SECRET_PASSWORD, "kafka.ssl_ca_file": str(ca)})
    address = s.bootstrap_servers
    assert address == "127.0.0.1:1" and f"{address}" == "127.0.0.1:1"   # a str wherever it is shown
    assert SECRET_PASSWORD not in repr(s) and SECRET_PASSWORD not in repr(address)
    config = client_config(address)
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"], config["ssl.ca.location"]) == \
        ("alice", SECRET_PASSWORD, str(ca))

    props = flink_kafka.client_properties(address)
    assert SECRET_PASSWORD not in json.dumps(props), "the password must not travel in a job graph"
    secret_file = s.kafka.sasl_secret_file
    assert props["sasl.jaas.config"] == f"${{vigilsecret:{secret_file}:sasl.jaas.config}}"
    assert props["ssl.truststore.location"] == str(ca) and props["ssl.truststore.type"] == "PEM"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert "ScramLoginModule required" in secret_file.read_text() and SECRET_PASSWORD in secret_file.read_text()
    assert flink_kafka.table_options(address)["properties.security.protocol"] == "SASL_SSL"

    unpickled = pickle.loads(pickle.dumps(address))
    assert unpickled == address and unpickled.connection.security_protocol == "SASL_SSL"
    assert unpickled.connection.sasl_password is None and SECRET_PASSWORD.encode() not in pickle.dumps(address)

    with pytest.raises(SettingsError, match="no SASL login is configured"):
        client_config(s.evolve(kafka__sasl_password=None, kafka__sasl_username=None).bootstrap_servers)
    with pytest.raises(SettingsError, match="kafka.ssl_ca_file .* does not exist"):
        client_config(s.evolve(kafka__ssl_ca_file=str(tmp_path / "missing.pem")).bootstrap_servers)
    with pytest.raises(SettingsError, match="kafka.security_protocol") as bad:
        VigilSettings.load({"home": tmp_path, "kafka.security_protocol": "SSL_PLEASE"})
    assert "\n" not in str(bad.value)
    with pytest.raises(SettingsError, match="mqtt.username and mqtt.password"):
        VigilSettings.load({"home": tmp_path, "mqtt.username": "only-a-user"})


_CLIENTS = {"Producer", "Consumer", "AdminClient"}


def _configured_by_client_config(node: ast.AST) -> bool:
    def is_call(n: ast.AST) -> bool:
        return isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "client_config"

    if is_call(node):
        return True
    return isinstance(node, ast.Dict) and any(k is None and is_call(v) for k, v in zip(node.keys, node.values))


def test_every_kafka_client_of_the_project_is_configured_by_client_config():
    """No path can forget the login: every confluent-kafka client gets client_config(...), and Flink
    Kafka sources and sinks are built only in connectors/flink_kafka.py (which adds client_properties)."""
    offenders = []
    for folder in ("connectors", "jobs", "stack", "udfs", "vigil"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            where = path.relative_to(PROJECT_ROOT)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in _CLIENTS and not (node.args and _configured_by_client_config(node.args[0])):
                    offenders.append(f"{where}:{node.lineno} {name}(...) without client_config")
                if str(where) != "connectors/flink_kafka.py":
                    if name == "builder" and getattr(node.func.value, "id", "") in ("KafkaSource", "KafkaSink"):
                        offenders.append(f"{where}:{node.lineno} {node.func.value.id}.builder() outside flink_kafka")
                    if name == "for_connector" and node.args and getattr(node.args[0], "value", None) == "kafka":
                        offenders.append(f"{where}:{node.lineno} for_connector('kafka') outside flink_kafka")
    assert not offenders, "\n".join(offenders)


# --- a SASL/SCRAM-over-TLS broker -----------------------------------------------------------------

@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory, stack_settings: VigilSettings) -> Iterator[VigilSettings]:
    """Settings of a running local broker that takes SASL_SSL only (its own home, secrets made as setup does)."""
    home = tmp_path_factory.mktemp("sasl-home")
    (home / "downloads").symlink_to(stack_settings.downloads)
    make_secrets(VigilSettings.load({"home": home}))
    settings = _sasl_settings(home)
    brokers = KafkaCluster(settings)
    try:
        brokers.start(timeout=120)
    except ServiceError as exc:
        brokers.stop()
        pytest.fail(f"the SASL_SSL broker could not be started: {exc}", pytrace=False)
    try:
        yield settings
    finally:
        assert brokers.stop(), "the SASL_SSL broker was gone before teardown"


@pytest.mark.kafka
def test_clients_without_the_login_are_refused_and_the_projects_clients_log_in(sasl_broker: VigilSettings):
    address = sasl_broker.bootstrap_servers
    port, controller_port = sasl_broker.kafka.broker_ports()[0]
    # plaintext on the SASL_SSL listener: the broker never answers it
    with pytest.raises(BrokerUnavailable, match="no Kafka broker answers"):
        check_broker(f"127.0.0.1:{port}", timeout=4)
    # TLS with the right CA but a wrong password: refused, and said so
    with pytest.raises(BrokerUnavailable, match="refused the login.*invalid credentials"):
        check_broker(sasl_broker.evolve(kafka__sasl_password="wrong").bootstrap_servers, timeout=6)
    # the controller listener wants a certificate of the local CA (mutual TLS): a SASL client is refused
    errors = []
    admin = AdminClient({**client_config(address), "bootstrap.servers": f"127.0.0.1:{controller_port}",
                         "error_cb": errors.append})
    with pytest.raises(Exception):
        admin.list_topics(timeout=4)
    admin.poll(0.5)
    assert any("certificate" in e.str() for e in errors), [e.str() for e in errors]

    # the SCRAM user was created at format time from an owner-only argument file, gone since
    assert not list(sasl_broker.home.rglob("format.args"))
    assert (sasl_broker.home / "kafka" / "server.properties").stat().st_mode & 0o077 == 0

    # the project's clients, given the settings' address, log in: admin, producer, consumer, schema store
    check_broker(address)
    topic = f"sec.{uuid.uuid4().hex[:8]}"
    create_topic(address, topic, 2)
    schema_store.register(address, topic, load_schema())
    with AvroProducer(address, topic, load_schema()) as producer:
        for r in simulation.generate(simulation.FleetSettings(vehicles=2, events=40, seed=5)):
            producer.send(r, key=r["vehicle_id"])
    assert sum(1 for _ in read_all(address, topic)) == 40
    assert schema_store.lookup(address, topic) == load_schema()


@pytest.mark.kafka
@pytest.mark.flink
def test_flink_datastream_source_and_sink_log_in(sasl_broker: VigilSettings, flink_activated):
    from pyflink.common import Types

    from jobs.core.flink_env import stream_environment

    address = sasl_broker.bootstrap_servers
    source, target = f"sec.ds-in.{uuid.uuid4().hex[:8]}", f"sec.ds-out.{uuid.uuid4().hex[:8]}"
    create_topic(address, source, 2)
    create_topic(address, target, 2)
    with AvroProducer(address, source, load_schema()) as producer:
        for r in simulation.generate(simulation.FleetSettings(vehicles=3, events=90, seed=6)):
            producer.send(r, key=r["vehicle_id"])
    env = stream_environment(parallelism__default=1)
    stream = env.from_source(flink_kafka.bytes_stream_source(source, address, group_id=f"g-{source}", bounded=True),
                             flink_kafka.no_watermarks(), "bytes", type_info=flink_kafka.bytes_type_info())
    (stream.map(lambda payload: str(len(payload)), output_type=Types.STRING()).name("size")
     .sink_to(flink_kafka.string_stream_sink(target, address)).name("sizes-to-kafka"))
    env.execute("test-sasl-datastream")
    assert sum(1 for _ in read_all(address, target)) == 90


@pytest.mark.kafka
@pytest.mark.flink
def test_a_scoring_job_runs_end_to_end_on_the_sasl_ssl_listener(sasl_broker: VigilSettings, trained_model,
                                                                tmp_path):
    address = sasl_broker.bootstrap_servers
    topic = f"sec.score.{uuid.uuid4().hex[:8]}"
    create_topic(address, topic, 3)
    schema_store.register(address, topic, load_schema())
    with AvroProducer(address, topic, load_schema()) as producer:
        for r in simulation.generate(simulation.FleetSettings(vehicles=4, events=300, seed=8, failure_rate=0.0)):
            producer.send(r, key=r["vehicle_id"])
    secret = tmp_path / "key"
    secret.write_text("sasl-secret")
    kafka = sasl_broker.kafka
    user, password = kafka.require_sasl()
    env = {**os.environ, "VIGIL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "VIGIL_KAFKA_SASL_USERNAME": user,
           "VIGIL_KAFKA_SASL_PASSWORD": password, "VIGIL_KAFKA_SSL_CA_FILE": str(kafka.ssl_ca_file),
           "VIGIL_KAFKA_SASL_SECRET_FILE": str(tmp_path / "kafka-sasl.properties")}
    job = subprocess.run([sys.executable, "-m", "jobs.score_events", "--input", topic, "--bootstrap-servers", address,
                          "--model-store", trained_model[0], "--model", REF, "--tier", "none",
                          "--pseudonym-secret-file", str(secret), "--checkpoint-interval", "1 s",
                          "--group-id", f"g-{topic}", "--bounded"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=400)
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[:2500] + "\n...\n" + output[-2500:]
    assert password not in output
    contracts = outputs(load_schema())
    scored = read_checked(address, f"{topic}.scored", contracts.scored)
    assert sorted((r["source_partition"], r["source_offset"]) for r in scored) == \
        sorted((m.partition(), m.offset()) for m in read_all(address, topic))
    assert len(scored) == 300 and read_checked(address, f"{topic}.dlq", contracts.dead_letters) == []


# --- the SQL scoring job --------------------------------------------------------------------------------

def _sql_session_text(settings: VigilSettings) -> tuple[str, dict[str, str]]:
    """The init script of a SQL scoring job of topic ``t`` with ``settings``, and its placeholders."""
    from connectors.avro_serde import schema_id
    from jobs.core import scoring

    schema = load_schema()
    manifest = {"version": "t@1", "number": 1, "threshold": 1.0, "schema": schema_id(schema),
                "features": {"names": feature_columns(schema)}}
    options = run_sql.RunSqlOptions(input_topic="t")
    plan = scoring.assemble(settings, options, schema, manifest, scoring.load_suite(None, schema), job=run_sql.JOB)
    return run_sql.scoring_session(settings, plan, "s1").script(), run_sql.placeholders(options, plan)


def test_the_sql_jobs_kafka_tables_connect_with_the_settings_security(tmp_path):
    plain = VigilSettings.load({"home": tmp_path, "kafka.bootstrap_servers": "127.0.0.1:1", "model.store": "/m",
                                "tier": "none"})
    text, _ = _sql_session_text(plain)
    kafka_tables = text.count("'connector' = 'kafka'")
    assert kafka_tables >= 5  # the topic's raw table, the job's source and its three sinks, the companions
    assert text.count("'properties.bootstrap.servers' = '127.0.0.1:1'") == kafka_tables
    assert "security.protocol" not in text

    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    secured = VigilSettings.load({"home": tmp_path, "kafka.bootstrap_servers": "127.0.0.1:1", "model.store": "/m",
                                  "tier": "none", "kafka.security_protocol": "SASL_SSL", "kafka.sasl_username": "alice",
                                  "kafka.sasl_password": SECRET_PASSWORD, "kafka.ssl_ca_file": str(ca)})
    text, values = _sql_session_text(secured)
    for option in ("'properties.security.protocol' = 'SASL_SSL'", "'properties.sasl.mechanism' = 'SCRAM-SHA-512'",
                   f"'properties.ssl.truststore.location' = '{ca}'",
                   f"'properties.sasl.jaas.config' = '${{vigilsecret:{secured.kafka.sasl_secret_file}:"):
        assert text.count(option) == kafka_tables, option
    assert SECRET_PASSWORD not in text, "the password must not be in the session's init script"
    # a script's own Kafka table connects with ${KAFKA_CONNECTION}; the bare address is refused, on one line
    assert "'properties.security.protocol' = 'SASL_SSL'" in values["KAFKA_CONNECTION"]
    assert SECRET_PASSWORD not in values["KAFKA_CONNECTION"]
    with pytest.raises(ValueError, match="without \\$\\{KAFKA_CONNECTION\\}") as bad:
        run_sql.render("CREATE TABLE x WITH ('properties.bootstrap.servers' = '${BOOTSTRAP_SERVERS}');", values)
    assert "\n" not in str(bad.value)


@pytest.mark.kafka
@pytest.mark.flink
def test_the_sql_job_scores_through_the_sasl_ssl_listener_on_a_standalone_cluster(
        sasl_broker: VigilSettings, flink_cluster, trained_model, monkeypatch, capsys, tmp_path):  # noqa: F811
    address = sasl_broker.bootstrap_servers
    source = f"sec.sql.{uuid.uuid4().hex[:8]}"
    create_topic(address, source, 2)
    schema_store.register(address, source, load_schema())
    with AvroProducer(address, source, load_schema()) as producer:
        for r in simulation.generate(simulation.FleetSettings(vehicles=3, events=120, seed=9, failure_rate=0.0)):
            producer.send(r, key=r["vehicle_id"])
    kafka = sasl_broker.kafka
    user, password = kafka.require_sasl()
    for key, value in {"VIGIL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "VIGIL_KAFKA_SASL_USERNAME": user,
                       "VIGIL_KAFKA_SASL_PASSWORD": password, "VIGIL_KAFKA_SSL_CA_FILE": str(kafka.ssl_ca_file),
                       "VIGIL_KAFKA_SASL_SECRET_FILE": str(tmp_path / "kafka-sasl.properties"),
                       "VIGIL_FLINK_REST_PORT": str(flink_cluster.settings.flink.rest_port)}.items():
        monkeypatch.setenv(key, value)
    code = run_sql.main(["--input", source, "--model-store", Path(trained_model[0]).as_uri(), "--model", REF,
                         "--bounded", "--wait", "--tier", "none", "--bootstrap-servers", address,
                         "--group-id", f"g-{source}"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert password not in printed.out + printed.err
    sessions = sorted((flink_cluster.settings.home / "sql" / "sessions").glob("*/init.sql"),
                      key=lambda p: p.stat().st_mtime)
    init = sessions[-1].read_text()
    assert f"'topic' = '{source}'" in init and "'properties.security.protocol' = 'SASL_SSL'" in init
    assert password not in init
    scored = read_checked(address, f"{source}.scored", outputs(load_schema()).scored)
    assert sorted((r["source_partition"], r["source_offset"]) for r in scored) == \
        sorted((m.partition(), m.offset()) for m in read_all(address, source))
    assert len(scored) == 120


# --- Mosquitto with a password file -----------------------------------------------------------------

def _connect(port: int, username: str | None = None, password: str | None = None) -> str:
    """Connect to the MQTT broker and return its CONNACK reason."""
    done, reason = threading.Event(), []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}")
    if username:
        client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, rc, _p: (reason.append(str(rc)), done.set())
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK within 10 s"
    finally:
        client.loop_stop()
        client.disconnect()
    return reason[0]


@pytest.mark.kafka
def test_mosquitto_with_a_password_file_refuses_anonymous_and_the_bridge_logs_in(sasl_broker: VigilSettings):
    from connectors.mqtt_bridge import BridgeSettings, MqttBridge

    settings = sasl_broker.evolve(mqtt__port=free_port(), mqtt__username="bridge", mqtt__password=SECRET_PASSWORD)
    broker = Mosquitto(settings)
    assert broker.start() == "started"
    try:
        assert broker.password_file.stat().st_mode & 0o777 == 0o600
        assert SECRET_PASSWORD not in broker.password_file.read_text()
        assert _connect(settings.mqtt.port) == "Not authorized"
        assert _connect(settings.mqtt.port, "bridge", "wrong") == "Not authorized"
        assert _connect(settings.mqtt.port, "bridge", SECRET_PASSWORD) == "Success"

        topic, mqtt_topic = f"sec.mqtt.{uuid.uuid4().hex[:8]}", f"sec/{uuid.uuid4().hex[:6]}"
        secret = settings.home / "secrets" / "pseudonym.key"
        bridge = MqttBridge(BridgeSettings(
            mqtt_port=settings.mqtt.port, mqtt_username="bridge", mqtt_password=SECRET_PASSWORD,
            mqtt_topic=f"{mqtt_topic}/#", client_id=f"bridge-{topic}", bootstrap_servers=settings.bootstrap_servers,
            topic=topic, schema_file="telemetry-v1", secret_file=str(secret)))
        assert bridge.settings.bootstrap_servers.connection.security_protocol == "SASL_SSL"
        readings = list(simulation.generate(simulation.FleetSettings(vehicles=2, events=20, seed=4)))
        ready = threading.Event()
        runner = threading.Thread(target=bridge.run, kwargs={"max_messages": len(readings), "ready": ready})
        runner.start()
        assert ready.wait(30), "the bridge did not subscribe"
        device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"device-{topic}")
        device.username_pw_set("bridge", SECRET_PASSWORD)
        device.connect("127.0.0.1", settings.mqtt.port)
        device.loop_start()
        for r in readings:
            body = {**r, "event_time": int(r["event_time"].timestamp() * 1000)}
            device.publish(f"{mqtt_topic}/{r['vehicle_id']}", json.dumps(body), qos=1).wait_for_publish(10)
        runner.join(60)
        device.loop_stop()
        assert not runner.is_alive() and bridge.forwarded == len(readings)
        assert sum(1 for _ in read_all(settings.bootstrap_servers, topic)) == len(readings)
    finally:
        broker.stop()


# --- Flink's REST API over https ----------------------------------------------------------------------

@pytest.mark.flink
def test_flink_rest_answers_over_https_with_the_generated_certificate(flink_activated: VigilSettings):
    settings = flink_activated.evolve(flink__rest_ssl=True, flink__rest_port=free_port())
    tls = certs.files(settings)   # made by `python -m stack setup`
    cluster = LocalFlinkCluster(settings)
    try:
        cluster.start()
        assert cluster.rest_url.startswith("https://127.0.0.1:")
        rendered = cluster.conf_dir / "config.yaml"
        config = yaml.safe_load(rendered.read_text())
        assert config["security"]["ssl"]["rest"]["enabled"] is True and rendered.stat().st_mode & 0o077 == 0
        assert config["rest"]["bind-address"] == settings.host == "127.0.0.1"   # loopback only
        verified = ssl.create_default_context(cafile=str(tls.ca))
        with urllib.request.urlopen(cluster.rest_url + "/overview", context=verified, timeout=10) as response:
            assert json.loads(response.read())["taskmanagers"] == 1
        # Flink's own REST client (what `flink run` submits with) trusts it through the rendered config;
        # `-m` needs the scheme (without it the CLI speaks plain HTTP)
        assert cluster.address == cluster.rest_url.removeprefix("http://")
        listed = subprocess.run([str(cluster.script("flink")), "list", "-m", cluster.address],
                                env=cluster.environment(), capture_output=True, text=True, timeout=180)
        assert listed.returncode == 0 and "No running jobs" in listed.stdout, \
            (listed.stdout + listed.stderr)[-3000:]
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):   # a CA it was not made by
            urllib.request.urlopen(cluster.rest_url + "/overview", context=ssl.create_default_context(), timeout=10)
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):         # plain http: no answer
            urllib.request.urlopen(cluster.rest_url.replace("https", "http") + "/overview", timeout=10).read()
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


def test_bad_security_settings_fail_with_one_line(tmp_path):
    settings = VigilSettings.load({"home": tmp_path, "flink.rest_ssl": True})
    from stack.flink_home import FlinkHomeError, render_config

    with pytest.raises(FlinkHomeError, match="flink.rest_ssl is on but no TLS material") as info:
        render_config(settings)
    assert "\n" not in str(info.value)
    broker = KafkaCluster(_sasl_settings(tmp_path)).nodes[0]
    with pytest.raises(ServiceError, match="no TLS material|no SASL login") as info:
        broker.prepare()
    assert "\n" not in str(info.value)
    awkward = _sasl_settings(tmp_path, **{"kafka.sasl_username": "vigil", "kafka.sasl_password": 'a,b"c'})
    certs.ensure(awkward)   # also: a home path longer than the 64 characters of a certificate name
    with pytest.raises(ServiceError, match="may not contain") as info:
        KafkaCluster(awkward).nodes[0].prepare()
    assert "\n" not in str(info.value) and 'a,b"c' not in str(info.value)
    assert isinstance(KafkaAddress.of("h:1"), str) and KafkaAddress.of("h:1").connection.security_protocol == "PLAINTEXT"
