"""Prometheus on the local stack: it scrapes Vigil's custom metrics from a running scoring job.

The chain under test is the real one: the local Flink profile's Prometheus reporter
(flink-conf/config.local.yaml) in the embedded mini-cluster of ``python -m jobs.score_events``,
and the Prometheus server from Debian's package, started by ``stack.services.Prometheus`` on a
free port (VIGIL_PROMETHEUS_PORT) and scraping the reporter's port range.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from connectors import schema_store
from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, load_schema, schema_id
from jobs import simulation
from stack.flink_cluster import LocalFlinkCluster
from stack.flink_home import render_config
from stack.services import Prometheus, ServiceError, parse_ports
from tests.stack.cluster_fixture import flink_cluster  # noqa: F401 - a fixture
from tests.trained_model import REF
from vigil.settings import PROJECT_ROOT, VigilSettings

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

PREFIX = "flink_taskmanager_job_task_operator_vigil_"
CLUSTER_DOC = PROJECT_ROOT / "docs" / "cluster.md"
GOOD, BAD = 300, 3
SCRAPE_DEADLINE_S = 240.0  # the job's start (JVM, Python workers, TensorFlow) plus a few scrapes


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def query(server: Prometheus, promql: str) -> list[dict]:
    """The instant vector a PromQL query returns (``[]`` when nothing matches)."""
    url = f"{server.address}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def sanitized(label_value: str) -> str:
    """A label value as the reporter writes it: every character outside [a-zA-Z0-9:_] becomes "_"."""
    return re.sub(r"[^a-zA-Z0-9:_]", "_", label_value)


def value(server: Prometheus, promql: str) -> float | None:
    result = query(server, promql)
    return float(result[0]["value"][1]) if result else None


def _start(service: Prometheus) -> Prometheus:
    try:
        service.start()
    except ServiceError as exc:  # a missing binary says `make setup`
        pytest.fail(f"Prometheus could not be started for the tests: {exc}", pytrace=False)
    return service


@pytest.fixture
def prometheus(tmp_path: Path, stack_settings: VigilSettings) -> Iterator[Prometheus]:
    """A Prometheus of this test's own (own home, free port), stopped at the end."""
    service = Prometheus(stack_settings.evolve(home=tmp_path, prometheus__port=free_port()))
    try:
        yield _start(service)
    finally:
        service.stop()


def test_prometheus_scrapes_every_port_of_the_local_reporter_range(prometheus: Prometheus) -> None:
    reporter = render_config(prometheus.settings, profile="local")["metrics"]["reporter"]["prom"]
    assert reporter["factory.class"] == "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
    ports = parse_ports(reporter["port"])
    assert len(ports) >= 3, "one port per local JVM: the mini-cluster, the standalone JobManager and TaskManager"
    deadline, targets = time.monotonic() + 15, []
    while not targets and time.monotonic() < deadline:  # the scrape manager syncs a moment after ready
        with urllib.request.urlopen(f"{prometheus.address}/api/v1/targets", timeout=5) as response:
            targets = json.loads(response.read())["data"]["activeTargets"]
        time.sleep(0.5)
    assert sorted(t["labels"]["instance"] for t in targets) == sorted(f"127.0.0.1:{p}" for p in ports)
    assert {t["labels"]["job"] for t in targets} == {"flink-local"}
    assert prometheus.start() == "reused"


def test_another_prometheus_on_the_port_is_not_taken_for_ours(tmp_path: Path, stack_settings: VigilSettings) -> None:
    """Debian's package starts a system Prometheus on 9090 where systemd runs: it must not count as ours."""
    port = free_port()
    other = Prometheus(stack_settings.evolve(home=tmp_path / "other", prometheus__port=port))
    _start(other)
    try:
        ours = Prometheus(stack_settings.evolve(home=tmp_path / "ours", prometheus__port=port))
        assert not ours.probe()
        with pytest.raises(ServiceError, match=rf"port\(s\) \[{port}\]"):
            ours.start(timeout=10)
    finally:
        other.stop()


def produce(bootstrap: str, topic: str) -> None:
    """GOOD simulated readings and BAD undecodable records (which become dead letters)."""
    schema = load_schema()
    serialize = AvroSerializer(schema)
    header = [(SCHEMA_HEADER, schema_id(schema).encode())]
    events = simulation.generate(simulation.FleetSettings(vehicles=5, events=GOOD, seed=11, failure_rate=0.05))
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0})
    for i, event in enumerate(events):
        producer.produce(topic, key=event["vehicle_id"].encode(), value=serialize(event), headers=header)
        if i < BAD:
            producer.produce(topic, key=f"bad-{i}".encode(), value=b"\x00not avro at all", headers=header)
    assert producer.flush(30) == 0


class ScoringJob:
    """``python -m jobs.score_events`` (unbounded) in its own session, so that it can be ended with its JVM."""

    def __init__(self, args: list[str]) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYFLINK_", "_PYFLINK_")) and k != "FLINK_CONF_DIR"}
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "jobs.score_events", *args], cwd=PROJECT_ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()

    def output(self, lines: int = 40) -> str:
        return "".join(self.lines[-lines:])

    def job_id(self) -> str | None:
        found = re.findall(r"submitted job ([0-9a-f]{32})", "".join(self.lines))
        return found[-1] if found else None

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def documented_vigil_metrics() -> set[str]:
    return set(re.findall(rf"\b{PREFIX}[a-z0-9_]+", CLUSTER_DOC.read_text()))


def test_prometheus_scrapes_vigil_metrics_of_a_scoring_job(prometheus: Prometheus, kafka_bootstrap: str,
                                                          new_topic, trained_model, tmp_path: Path) -> None:
    topic = new_topic("in")
    schema_store.register(kafka_bootstrap, topic, load_schema())
    produce(kafka_bootstrap, topic)
    secret = tmp_path / "pseudonym.key"
    secret.write_text("test-secret")
    store, manifest = trained_model
    job = ScoringJob(["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", store,
                      "--model", REF, "--tier", "none", "--pseudonym-secret-file", str(secret),
                      "--group-id", f"g-{topic}", "--checkpoint-interval", "2 s"])
    try:
        deadline = time.monotonic() + SCRAPE_DEADLINE_S
        scored = None
        while time.monotonic() < deadline:
            assert job.proc.poll() is None, f"the scoring job exited ({job.proc.returncode}):\n{job.output()}"
            job_id = job.job_id()
            if job_id:
                scored = value(prometheus, f'sum({PREFIX}events_scored{{job_id="{job_id}"}})')
                if scored == GOOD:
                    break
            time.sleep(2)
        assert scored == GOOD, (f"Prometheus saw {scored} events scored by job {job.job_id()} "
                                f"within {SCRAPE_DEADLINE_S:.0f}s, not {GOOD}. Job output:\n{job.output()}")
        of_job = f'{{job_id="{job_id}"}}'
        assert value(prometheus, f"sum({PREFIX}dead_letters{of_job})") == BAD
        anomalies = value(prometheus, f"sum({PREFIX}anomalies{of_job})")
        assert anomalies is not None and 0 <= anomalies <= GOOD
        assert value(prometheus, f"max({PREFIX}score_p99{of_job})") > 0
        assert value(prometheus, f"min({PREFIX}score_p50{of_job})") >= 0
        assert value(prometheus, f"max({PREFIX}scoring_latency_ms{of_job})") is not None
        info = query(prometheus, f"{PREFIX}model_version_info{of_job} == 1")
        assert {s["metric"]["model_version"] for s in info} == {sanitized(manifest["version"])}
        # input drift: a series per feature; 300 readings fill no window of DRIFT_WINDOW (1000): -1
        drift = query(prometheus, f"{PREFIX}feature_drift_psi{of_job}")
        assert {s["metric"]["feature"] for s in drift} == set(manifest["features"]["names"])
        assert value(prometheus, f"max({PREFIX}drift_max_psi{of_job})") == -1
        # docs/cluster.md lists what the job exports in the vigil group; besides, only the alert counter
        # and the model-handle counters, which have no series before their first event
        exported = {s["metric"]["__name__"] for s in query(prometheus, f'{{__name__=~"{PREFIX}.*",job_id="{job_id}"}}')}
        documented = documented_vigil_metrics()
        assert exported <= documented, f"not in docs/cluster.md: {sorted(exported - documented)}"
        assert documented - exported <= {f"{PREFIX}{n}" for n in ("alerts", "model_refusals", "model_fallbacks")}, \
            f"documented, not exported: {sorted(documented - exported)}"
    finally:
        job.stop()


def test_prometheus_scrapes_the_standalone_clusters_jobmanager_and_taskmanager(
        prometheus: Prometheus, flink_cluster: LocalFlinkCluster) -> None:
    """The standalone cluster loads the reporter as a plugin, one port of the range per daemon."""
    with urllib.request.urlopen(f"{flink_cluster.rest_url}/taskmanagers", timeout=5) as response:
        tm_id = sanitized(json.loads(response.read())["taskmanagers"][0]["id"])
    deadline = time.monotonic() + 60
    taskmanager, jobmanagers = [], []
    while time.monotonic() < deadline and not (taskmanager and jobmanagers):
        taskmanager = query(prometheus, f'flink_taskmanager_Status_JVM_Memory_Heap_Used{{tm_id="{tm_id}"}}')
        jobmanagers = query(prometheus, "flink_jobmanager_numRegisteredTaskManagers >= 1")
        time.sleep(1)
    assert taskmanager, f"Prometheus scraped no metric of the cluster's TaskManager {tm_id}"
    tm_instance = taskmanager[0]["metric"]["instance"]
    assert [s for s in jobmanagers if s["metric"]["instance"] != tm_instance], \
        "Prometheus scraped no JobManager on a port of its own"
