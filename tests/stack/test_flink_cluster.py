"""The local standalone cluster: start/reuse/stop, and a PyFlink job file submitted with flink run."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.kafka_io import AvroProducer, read_all
from stack.flink_cluster import FlinkClusterError, LocalFlinkCluster, flink_run, parse_job_id
from vigil.settings import PROJECT_ROOT
from tests.connectors.test_avro_serde import reading
from tests.stack.cluster_fixture import flink_cluster, free_port  # noqa: F401 - the fixture

ENRICH = PROJECT_ROOT / "jobs" / "enrich_telemetry.py"


def _produce(bootstrap: str, topic: str, count: int) -> None:
    schema = load_schema()
    schema_store.register(bootstrap, topic, schema)
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    with AvroProducer(bootstrap, topic, schema) as producer:
        for i in range(count):
            record = reading(vehicle_id=f"V{i % 7}", event_time=t0 + dt.timedelta(seconds=i))
            producer.send(record, key=record["vehicle_id"])


@pytest.mark.flink
def test_start_reuses_the_healthy_cluster(flink_cluster):
    assert flink_cluster.start() == "reused"
    overview = flink_cluster.require()
    assert overview["taskmanagers"] == 1 and overview["slots-total"] == 2
    assert len(flink_cluster.pids()) == 2  # one JobManager, one TaskManager, both ours
    assert flink_cluster.status().startswith(f"up at {flink_cluster.rest_url}")


@pytest.mark.flink
@pytest.mark.kafka
def test_flink_run_job_file_writes_exactly_the_produced_count(flink_cluster, kafka_bootstrap, new_topic):
    source, target = new_topic("telemetry"), new_topic("enriched")
    produced = 300
    _produce(kafka_bootstrap, source, produced)

    job_id = flink_run(flink_cluster.settings, ENRICH,
                       ["--input", source, "--output", target, "--bounded", "--bootstrap-servers", kafka_bootstrap,
                        "--group-id", f"g-{target}"], detached=True)
    state = flink_cluster.wait_for_job(job_id, timeout=180)
    assert state == "FINISHED", flink_cluster.job_exception(job_id)
    assert {j["jid"]: j["state"] for j in flink_cluster.jobs()}[job_id] == "FINISHED"

    out = [json.loads(m.value()) for m in read_all(kafka_bootstrap, target)]
    assert len(out) == produced
    assert len({(o["source_partition"], o["source_offset"]) for o in out}) == produced
    assert {o["vehicle_id"] for o in out} == {f"V{i}" for i in range(7)}


@pytest.mark.flink
@pytest.mark.kafka
def test_unbounded_job_runs_until_cancelled(flink_cluster, kafka_bootstrap, new_topic):
    source = new_topic("telemetry")
    _produce(kafka_bootstrap, source, 10)
    job_id = flink_run(flink_cluster.settings, ENRICH,
                       ["--input", source, "--output", f"{source}.out", "--bootstrap-servers", kafka_bootstrap],
                       detached=True)
    with pytest.raises(FlinkClusterError, match=f"job {job_id} is still RUNNING"):
        flink_cluster.wait_for_job(job_id, timeout=3)
    flink_cluster.cancel(job_id)
    assert flink_cluster.wait_for_job(job_id, timeout=60) == "CANCELED"


@pytest.mark.flink
@pytest.mark.kafka
def test_failing_job_file_raises_with_the_client_output(flink_cluster, new_topic):
    source = new_topic("noschema")  # no schema registered: the job's main() refuses to start
    with pytest.raises(FlinkClusterError, match="failed") as info:
        flink_run(flink_cluster.settings, ENRICH, ["--input", source, "--bootstrap-servers",
                                                   flink_cluster.settings.bootstrap_servers], detached=True)
    assert f"no schema is registered for topic {source!r}" in str(info.value)


def test_a_cluster_that_is_not_running_names_its_address_and_the_fix(stack_settings):
    cluster = LocalFlinkCluster(stack_settings.evolve(flink__rest_port=free_port()))
    assert cluster.status() == "down" and cluster.overview() is None
    assert cluster.stop() is False
    with pytest.raises(FlinkClusterError, match=rf"{cluster.rest_url} is not running.*python -m stack cluster up"):
        cluster.require()


def test_job_id_is_parsed_from_either_client():
    jid = "a4b904a7cb680f86983a03a6381e1c06"
    assert parse_job_id(f"Job has been submitted with JobID {jid}\n") == jid
    assert parse_job_id(f"[INFO] SQL update statement has been successfully submitted to the cluster:\nJob ID: {jid}\n") == jid
    assert parse_job_id("[ERROR] Could not execute SQL statement.") is None


def test_a_port_held_by_another_program_is_refused_before_anything_starts(stack_settings):
    import socket

    with socket.socket() as other:
        other.bind((stack_settings.host, 0))
        other.listen()
        cluster = LocalFlinkCluster(stack_settings.evolve(flink__rest_port=other.getsockname()[1]))
        with pytest.raises(FlinkClusterError, match="taken by a program that does not answer as a Flink cluster"):
            cluster.start(timeout=5)
        assert not cluster.pids()
