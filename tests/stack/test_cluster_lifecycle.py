"""A job's life on the standalone cluster: flink run -d returns, an upgrade resumes from a savepoint
with no duplicates or gaps, and a TaskManager that dies is replaced by the supervisor."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.kafka_io import AvroProducer, create_topic, read_all
from jobs import simulation
from stack.flink_cluster import flink_run
from tests.stack.cluster_fixture import flink_cluster  # noqa: F401 - the fixture
from tests.trained_model import REF
from vigil.settings import PROJECT_ROOT

pytestmark = [pytest.mark.kafka, pytest.mark.flink]
JOB = PROJECT_ROOT / "jobs" / "score_events.py"
BATCH = 150


def _produce(bootstrap: str, topic: str, batch: int) -> None:
    start = simulation.FIXED_START + dt.timedelta(days=batch)
    fleet = simulation.FleetSettings(vehicles=4, events=BATCH, seed=batch, failure_rate=0.0, start=start)
    with AvroProducer(bootstrap, topic, load_schema()) as producer:
        for r in simulation.generate(fleet):
            producer.send(r, key=r["vehicle_id"])


def _scored(bootstrap: str, topic: str, count: int, timeout: float = 120) -> list[tuple[int, int]]:
    deadline = time.monotonic() + timeout
    while True:
        seen = [(r["source_partition"], r["source_offset"])
                for r in (json.loads(m.value()) for m in read_all(bootstrap, f"{topic}.scored"))]
        if len(seen) >= count or time.monotonic() > deadline:
            return seen
        time.sleep(1)


@pytest.fixture
def job_args(kafka_bootstrap, trained_model, tmp_path):
    topic = f"test.lifecycle.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 3)
    schema_store.register(kafka_bootstrap, topic, load_schema())
    secret = tmp_path / "key"
    secret.write_text("lifecycle-secret")
    return topic, ["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", trained_model[0],
                   "--model", REF, "--tier", "none", "--pseudonym-secret-file", str(secret),
                   "--checkpoint-interval", "1 s", "--group-id", f"g-{topic}"]


def test_flink_run_detached_returns_and_an_upgrade_resumes_exactly(flink_cluster, kafka_bootstrap,  # noqa: F811
                                                                   job_args):
    topic, args = job_args
    # the README's command, as it is: the client returns once the job is submitted
    command = [str(flink_cluster.script("flink")), "run", "-m", flink_cluster.address, "-py", str(JOB),
               "-pyexec", sys.executable, "-pyclientexec", sys.executable, "-d", "--", *args]
    started = time.monotonic()
    client = subprocess.run(command, env=flink_cluster.environment(), capture_output=True, text=True, timeout=120)
    assert client.returncode == 0, client.stdout[-2000:] + client.stderr[-2000:]
    assert time.monotonic() - started < 120
    job_id = next(j["jid"] for j in flink_cluster.jobs() if j["state"] == "RUNNING")
    _produce(kafka_bootstrap, topic, 1)
    assert len(_scored(kafka_bootstrap, topic, BATCH)) == BATCH

    # upgrade: stop with a savepoint, then the job file again from it (python -m stack cluster upgrade)
    _produce(kafka_bootstrap, topic, 2)
    savepoint = flink_cluster.stop_with_savepoint(job_id)
    assert flink_cluster.wait_for_job(job_id, timeout=60) == "FINISHED"
    _produce(kafka_bootstrap, topic, 3)
    new_id = flink_run(flink_cluster.settings, JOB, [*args, "--from-savepoint", savepoint], detached=True)
    try:
        seen = _scored(kafka_bootstrap, topic, 3 * BATCH)
        time.sleep(3)
        seen = _scored(kafka_bootstrap, topic, 3 * BATCH, timeout=0)
        assert len(seen) == len(set(seen)) == 3 * BATCH, "duplicates or gaps across the upgrade"
    finally:
        flink_cluster.cancel(new_id)


def test_a_dead_taskmanager_is_replaced_and_the_job_goes_on(flink_cluster, kafka_bootstrap, job_args):  # noqa: F811
    topic, args = job_args
    assert flink_cluster.supervisor_pid() is not None, "cluster up starts the TaskManager supervisor"
    job_id = flink_run(flink_cluster.settings, JOB, args, detached=True)
    try:
        _produce(kafka_bootstrap, topic, 1)
        assert len(_scored(kafka_bootstrap, topic, BATCH)) == BATCH
        [taskmanager] = flink_cluster.taskmanager_pids()
        os.kill(taskmanager, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            pids = flink_cluster.taskmanager_pids()
            if pids and pids != [taskmanager] and (flink_cluster.overview() or {}).get("taskmanagers") == 1:
                break
            time.sleep(1)
        else:
            pytest.fail(f"no new TaskManager within 90 s:\n{(flink_cluster.log_dir / 'supervisor.log').read_text()}")
        assert "is gone: starting a new one" in (flink_cluster.log_dir / "supervisor.log").read_text()
        _produce(kafka_bootstrap, topic, 2)
        seen = _scored(kafka_bootstrap, topic, 2 * BATCH, timeout=180)
        assert len(seen) == len(set(seen)) == 2 * BATCH
    finally:
        flink_cluster.cancel(job_id)
