"""Exactly-once across a job's whole life: a hard stop and a resubmission go on where the output ended.

The scoring job runs as a user runs it (``python -m jobs.score_events``, its own process, the
embedded mini-cluster), is killed in the middle of a stream and submitted again with the same
consumer group: the scored topic and the Parquet tier hold every input record exactly once.
A backfill (``--from-earliest`` into other outputs) re-reads the whole topic.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.kafka_io import AvroProducer, create_topic, read_all
from jobs import simulation
from tests.trained_model import REF
from vigil.settings import PROJECT_ROOT

pytestmark = [pytest.mark.kafka, pytest.mark.flink]
BATCH = 200


def _produce(bootstrap: str, topic: str, batch: int) -> None:
    start = simulation.FIXED_START + dt.timedelta(days=batch)
    fleet = simulation.FleetSettings(vehicles=4, events=BATCH, seed=batch, failure_rate=0.0, start=start)
    with AvroProducer(bootstrap, topic, load_schema()) as producer:
        for r in simulation.generate(fleet):
            producer.send(r, key=r["vehicle_id"])


def _start(args: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "jobs.score_events", *args], stdout=out, stderr=subprocess.STDOUT,
                            cwd=PROJECT_ROOT, start_new_session=True)
    deadline = time.monotonic() + 180
    while "submitted job" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    return proc


def _offsets(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    return [(r["source_partition"], r["source_offset"]) for r in
            (json.loads(m.value()) for m in read_all(bootstrap, topic))]


def _wait_for(bootstrap: str, topic: str, count: int, timeout: float = 120) -> list[tuple[int, int]]:
    deadline = time.monotonic() + timeout
    while len(seen := _offsets(bootstrap, topic)) < count and time.monotonic() < deadline:
        time.sleep(1)
    return seen


def test_a_killed_job_resubmitted_goes_on_without_duplicates_or_gaps(kafka_bootstrap, trained_model, tmp_path):
    topic = f"test.redeploy.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 3)
    schema_store.register(kafka_bootstrap, topic, load_schema())
    secret = tmp_path / "key"
    secret.write_text("redeploy-secret")
    tier = tmp_path / "tier"
    args = ["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", trained_model[0],
            "--model", REF, "--tier", tier.as_uri(), "--pseudonym-secret-file", str(secret),
            "--checkpoint-interval", "1 s", "--group-id", f"g-{topic}"]
    _produce(kafka_bootstrap, topic, 1)
    job = _start(args, tmp_path / "first.log")
    try:
        assert len(_wait_for(kafka_bootstrap, f"{topic}.scored", BATCH)) == BATCH
        _produce(kafka_bootstrap, topic, 2)   # arrives while the job runs ...
        time.sleep(1.5)
    finally:
        os.killpg(job.pid, signal.SIGKILL)    # ... and the job dies hard, somewhere in the middle of it
        job.wait(30)
    _produce(kafka_bootstrap, topic, 3)       # arrives while no job runs
    job = _start(args, tmp_path / "second.log")
    try:
        seen = _wait_for(kafka_bootstrap, f"{topic}.scored", 3 * BATCH)
        time.sleep(3)                         # a few more checkpoints: nothing else may arrive
        seen = _offsets(kafka_bootstrap, f"{topic}.scored")
    finally:
        os.killpg(job.pid, signal.SIGTERM)
        job.wait(30)
    inputs = {(m.partition(), m.offset()) for m in read_all(kafka_bootstrap, topic)}
    assert len(seen) == len(set(seen)) == 3 * BATCH, "duplicates or gaps in the scored topic"
    assert set(seen) == inputs
    files = [str(p) for p in tier.rglob("part-*") if not p.name.startswith(".")]
    tier_offsets = ds.dataset(files, format="parquet").to_table(columns=["source_partition", "source_offset"])
    rows = list(zip(*(tier_offsets.column(c).to_pylist() for c in ("source_partition", "source_offset"))))
    assert len(rows) == len(set(rows)) and set(rows) <= inputs  # committed part files: never a duplicate

    # a backfill of the whole topic into other outputs, with another group: every record again, once
    backfill = f"{topic}.backfill"
    backfill_args = ["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", trained_model[0],
                     "--model", REF, "--tier", "none", "--pseudonym-secret-file", str(secret),
                     "--checkpoint-interval", "1 s", "--group-id", f"g-{topic}-backfill", "--from-earliest",
                     "--bounded", "--scored-topic", f"{backfill}.scored", "--alerts-topic", f"{backfill}.alerts",
                     "--dlq-topic", f"{backfill}.dlq"]
    code = subprocess.run([sys.executable, "-m", "jobs.score_events", *backfill_args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stdout[-2000:] + code.stderr[-2000:]
    again = _offsets(kafka_bootstrap, f"{backfill}.scored")
    assert len(again) == len(set(again)) == 3 * BATCH and set(again) == inputs
