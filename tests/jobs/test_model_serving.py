"""Safe serving on a real cluster: a running job follows its own model's alias, and only to a version that fits.

One store holds two datasets' models. A scoring job for dataset A runs on the standalone cluster;
dataset B's model is published and promoted next to it, then a version of A whose features are in
another order is promoted to A's champion, then the job's Python worker is killed (a forced
restart), then a good version of A is promoted. Every record must be scored, by the right
version, and the job must keep RUNNING throughout: no restart loop on a model problem.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import time
import uuid

import pytest

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.kafka_io import AvroProducer, create_topic, read_all
from connectors.model_registry import ModelRegistry
from jobs import simulation
from stack.flink_cluster import flink_run
from tests.stack.cluster_fixture import flink_cluster  # noqa: F401 - the fixture
from tests.trained_model import MODEL
from vigil.settings import PROJECT_ROOT

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def _copy_as_next(registry: ModelRegistry, name: str, source_ref: str, work_root, alias: str, **changes) -> int:
    """Publish the files of ``source_ref`` again as ``name``'s next version, with manifest ``changes``."""
    folder, manifest = registry.fetch(registry.resolve(source_ref))
    work = work_root / uuid.uuid4().hex[:8]
    shutil.copytree(folder, work)
    (work / "manifest.json").unlink()
    raw = {k: v for k, v in manifest.items() if k not in ("artifact", "model_name", "number", "files")}
    raw.update(version=f"{manifest['artifact']}-{work.name}", **changes)
    return registry.publish(name, work, raw, alias=alias).number


BATCH = 150


def _produce(bootstrap: str, topic: str, batch: int) -> None:
    """Batch ``batch`` of readings, all on day ``batch`` of January 2026 (so outputs tell batches apart)."""
    start = simulation.FIXED_START + dt.timedelta(days=batch)
    fleet = simulation.FleetSettings(vehicles=5, events=BATCH, seed=batch, failure_rate=0.0, start=start)
    with AvroProducer(bootstrap, topic, load_schema()) as producer:
        for r in simulation.generate(fleet):
            producer.send(r, key=r["vehicle_id"])


def _versions_of(bootstrap: str, topic: str, batches: int, timeout: float = 120) -> dict[int, list[str]]:
    """{batch: model versions of its scored records}, once the first ``batches`` batches are all scored."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[int, list[str]] = {}
        for m in read_all(bootstrap, f"{topic}.scored"):
            record = json.loads(m.value())
            found.setdefault(int(record["event_time"][8:10]) - 1, []).append(record["model_version"])
        if sum(map(len, found.values())) >= batches * BATCH or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_running_job_follows_only_versions_that_fit(flink_cluster, trained_model, kafka_bootstrap,  # noqa: F811
                                                    tmp_path):
    store = tmp_path / "store"
    shutil.copytree(trained_model[0], store)
    registry = ModelRegistry(str(store))
    topic = f"test.serving.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 3)
    schema_store.register(kafka_bootstrap, topic, load_schema())
    secret = tmp_path / "key"
    secret.write_text("serving-secret")
    job_id = flink_run(flink_cluster.settings, PROJECT_ROOT / "jobs" / "score_events.py", [
        "--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", str(store),
        "--model", f"{MODEL}@champion", "--model-refresh-seconds", "1", "--tier", "none",
        "--pseudonym-secret-file", str(secret), "--checkpoint-interval", "1 s", "--group-id", f"g-{topic}"])
    try:
        _produce(kafka_bootstrap, topic, 1)
        assert set(_versions_of(kafka_bootstrap, topic, 1)[1]) == {f"{MODEL}@1"}

        # dataset B's model lands in the same store and becomes its champion: A's job does not notice
        _copy_as_next(registry, "plant-b", f"{MODEL}@1", tmp_path, "champion", schema="dev.vigil.replay.plant_b@00")
        # a version of A with its features in another order is promoted: refused, A@1 keeps scoring
        names = registry.manifest(registry.resolve(f"{MODEL}@1"))["features"]
        bad = _copy_as_next(registry, MODEL, f"{MODEL}@1", tmp_path, "champion",
                            features=dict(names, names=list(reversed(names["names"]))))
        time.sleep(3)
        _produce(kafka_bootstrap, topic, 2)
        assert set(_versions_of(kafka_bootstrap, topic, 2)[2]) == {f"{MODEL}@1"}

        # a forced restart of the Python worker: the champion still does not fit -> the planned version
        workers = flink_cluster.python_workers()
        assert workers, "no Python worker of the cluster found"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        _produce(kafka_bootstrap, topic, 3)  # the next records meet the dead workers: the job restarts
        deadline = time.monotonic() + 120
        while flink_cluster.job_restarts(job_id) < 1:
            assert time.monotonic() < deadline, f"killing the Python workers {workers} did not restart the job"
            time.sleep(1)
        versions = _versions_of(kafka_bootstrap, topic, 3, timeout=180)
        assert [len(versions.get(b, [])) for b in (1, 2, 3)] == [BATCH] * 3   # exactly once across the restart
        assert set(versions[3]) == {f"{MODEL}@1"}
        assert flink_cluster.job(job_id)["state"] == "RUNNING"

        # a good version is promoted: the running job swaps to it
        good = _copy_as_next(registry, MODEL, f"{MODEL}@1", tmp_path, "champion")
        assert good == bad + 1
        time.sleep(3)
        _produce(kafka_bootstrap, topic, 4)
        versions = _versions_of(kafka_bootstrap, topic, 4)
        assert [len(versions.get(b, [])) for b in (1, 2, 3, 4)] == [BATCH] * 4
        assert set(versions[4]) == {f"{MODEL}@{good}"}
        assert flink_cluster.job(job_id)["state"] == "RUNNING"
        dead = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.dlq")]
        assert dead == []
    finally:
        flink_cluster.cancel(job_id)
