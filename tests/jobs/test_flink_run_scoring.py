"""Both scoring jobs submitted unchanged with `flink run -py` to a local standalone cluster."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.kafka_io import read_all
from connectors.kafka_io import create_topic
from stack.flink_cluster import flink_run
from tests.jobs.test_score_events import produce_with_bad_records
from tests.stack.cluster_fixture import flink_cluster  # noqa: F401 - module-scoped cluster fixture

from tests.trained_model import REF

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.fixture(scope="module")
def telemetry_with_bad_records(kafka_bootstrap):
    topic = f"test.flinkrun.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 3)
    schema_store.register(kafka_bootstrap, topic, load_schema())
    expected_bad = produce_with_bad_records(kafka_bootstrap, topic, good=400)
    return topic, 400, len(expected_bad)


@pytest.mark.parametrize("job, suffix", [("score_events.py", ""), ("score_events_stream.py", ".stream")])
def test_scoring_job_runs_on_the_standalone_cluster(job, suffix, flink_cluster, telemetry_with_bad_records,  # noqa: F811
                                                    kafka_bootstrap, trained_model, tmp_path):
    topic, good, bad = telemetry_with_bad_records
    secret = tmp_path / "key"
    secret.write_text("cluster-secret")
    args = ["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", trained_model[0], "--model", REF,
            "--pseudonym-secret-file", str(secret), "--bounded", "--checkpoint-interval", "1 s",
            "--group-id", f"g-{job}-{topic}"]
    if job == "score_events.py":
        args += ["--tier", (tmp_path / "tier").as_uri()]
    job_id = flink_run(flink_cluster.settings, JOBS / job, args, detached=True)
    assert flink_cluster.wait_for_job(job_id, timeout=300) == "FINISHED", flink_cluster.job_exception(job_id)
    scored = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}{suffix}.scored")]
    dlq = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}{suffix}.dlq")]
    assert len(scored) == good
    assert len(dlq) == bad
    assert {r["model_version"] for r in scored} == {trained_model[1]["version"]}
