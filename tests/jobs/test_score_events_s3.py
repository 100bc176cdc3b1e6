"""The scoring job writing its Parquet tier to s3a:// on the real local S3 server (s3proxy)."""
from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.kafka_io import AvroProducer
from connectors.object_store import s3_filesystem
from connectors.kafka_io import create_topic
from jobs import score_events, simulation

from tests.trained_model import REF

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.s3]


def test_parquet_tier_on_s3(kafka_bootstrap, s3_settings, trained_model, tmp_path):
    topic = f"test.s3tier.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    schema = load_schema()
    schema_store.register(kafka_bootstrap, topic, schema)
    events = list(simulation.generate(simulation.FleetSettings(vehicles=4, events=300, seed=12)))
    with AvroProducer(kafka_bootstrap, topic, schema) as producer:
        for e in events:
            producer.send(e, key=e["vehicle_id"])
    secret = tmp_path / "key"
    secret.write_text("s3-secret")
    prefix = f"tier-test/{topic}"
    code = score_events.main(["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store",
                              trained_model[0], "--model", REF, "--tier", f"s3a://{s3_settings.s3.bucket}/{prefix}",
                              "--pseudonym-secret-file", str(secret), "--bounded", "--checkpoint-interval", "1 s",
                              "--group-id", f"g-{topic}"])
    assert code == 0
    fs = s3_filesystem(s3_settings.s3)
    root = f"{s3_settings.s3.bucket}/{prefix}"
    # S3A leaves directory-marker objects beside the files: read the part files only
    parts = [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
             if i.type == pafs.FileType.File and i.base_name.startswith("part-")]
    partitioning = ds.partitioning(pa.schema([("dt", pa.string()), ("hr", pa.string())]), flavor="hive")
    table = ds.dataset(parts, filesystem=fs, format="parquet", partitioning=partitioning,
                       partition_base_dir=root).to_table()
    assert table.num_rows == len(events)
    assert set(table.column("model_version").to_pylist()) == {trained_model[1]["version"]}
    assert set(table.column("dt").to_pylist()) == {"2026-01-01"}
