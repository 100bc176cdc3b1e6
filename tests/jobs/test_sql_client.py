"""jobs/sql/score_events.sql rendered by jobs.run_sql and run by sql-client.sh on a standalone cluster."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connectors import schema_store
from connectors.avro_serde import feature_columns, load_schema
from connectors.kafka_io import AvroProducer
from jobs import run_sql, simulation
from connectors.records import outputs
from tests.contract import read_checked
from tests.trained_model import REF, model_inputs
from udfs.preprocess import pseudonym
from vigil.settings import PROJECT_ROOT, VigilSettings, read_pseudonym_secret
from tests.stack.cluster_fixture import flink_cluster, free_port  # noqa: F401 - the fixture

SCRIPT = PROJECT_ROOT / "jobs" / "sql" / "score_events.sql"


def _options(**overrides) -> run_sql.RunSqlOptions:
    base = dict(script=SCRIPT, telemetry_topic="t", scored_topic="t.scored")
    return run_sql.RunSqlOptions(**{**base, **overrides})


def _vigil(**overrides):
    return VigilSettings.load({"kafka.bootstrap_servers": "127.0.0.1:1", "model.store": "/models", **overrides})


def test_rendered_script_declares_the_schemas_columns_and_the_models_features():
    schema = load_schema()
    features = list(reversed(feature_columns(schema)))  # the manifest's order, whatever it is, is kept
    manifest = {"version": "v1", "features": {"names": features}}
    values = run_sql.placeholders(_options(bounded=True), _vigil(), schema, manifest)
    text = run_sql.render(SCRIPT.read_text(), values)

    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    assert not run_sql.PLACEHOLDER.search(code)
    source_ddl = code[code.index("CREATE TEMPORARY TABLE telemetry"):code.index("kafka_partition INT")]
    declared = re.findall(r"`(\w+)` ([A-Z0-9()]+(?: NOT NULL)?)", source_ddl)
    assert [name for name, _ in declared] == [f["name"] for f in schema["fields"]]
    assert dict(declared)["event_time"] == "TIMESTAMP(3) NOT NULL"
    assert dict(declared)["failure_label"] == "STRING"  # the one nullable field
    assert f"ANOMALY({', '.join(f'`{c}`' for c in features)})" in code
    assert "'scan.bounded.mode' = 'latest-offset'" in code
    assert "'key.fields' = 'vehicle_id_pseudonym'" in code
    # the scored table is the record contract's scored record, exactly
    sink_ddl = code[code.index("CREATE TEMPORARY TABLE scored"):code.index(") WITH", code.index("CREATE TEMPORARY TABLE scored"))]
    assert re.findall(r"`(\w+)`", sink_ddl) == outputs(schema).scored.names
    assert "PSEUDONYM(`vehicle_id`)" in code and "'sink.delivery-guarantee' = 'exactly-once'" in code


def test_missing_placeholder_is_named_with_its_line():
    with pytest.raises(ValueError, match=r"\$\{SCORED_TOPIC\} \(line 2\)"):
        run_sql.render("-- ${COMMENTS_ARE_LEFT_ALONE}\nSELECT '${SCORED_TOPIC}';\n", {}, "x.sql")


def test_model_missing_a_feature_of_the_topic_is_refused():
    manifest = {"version": "v9", "features": {"names": ["speed_kmh", "oil_pressure_kpa"]}}
    with pytest.raises(ValueError, match=r"model v9 needs columns \['oil_pressure_kpa'\]"):
        run_sql.placeholders(_options(), _vigil(), load_schema(), manifest)


def test_job_parameters_quote_uris_for_flinks_map_syntax():
    rendered = run_sql.job_parameters({"vigil.model.uri": "file:///m", "vigil.model.ref": "m@champion"})
    assert rendered == "'vigil.model.uri:''file:///m''',vigil.model.ref:m@champion"


def test_cluster_not_running_is_reported_with_its_address(monkeypatch, capsys):
    port = free_port()
    monkeypatch.setenv("VIGIL_FLINK_REST_PORT", str(port))
    code = run_sql.main([str(SCRIPT), "--telemetry-topic", "t", "--scored-topic", "s", "--model-store", "/m"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{port}" in err and "python -m stack cluster up" in err


@pytest.mark.flink
@pytest.mark.kafka
def test_sql_job_scores_every_event_with_the_model(flink_cluster, trained_model, kafka_bootstrap, new_topic,
                                                   monkeypatch, capsys):
    store, manifest = trained_model
    source = new_topic("telemetry")
    scored_topic = f"{source}.scored"
    schema = load_schema()
    schema_store.register(kafka_bootstrap, source, schema)
    fleet = simulation.FleetSettings(vehicles=10, events=500, seed=21, failure_rate=0.05)
    records = list(simulation.generate(fleet))
    with AvroProducer(kafka_bootstrap, source, schema) as producer:
        for record in records:
            producer.send(record, key=record["vehicle_id"])

    monkeypatch.setenv("VIGIL_FLINK_REST_PORT", str(flink_cluster.settings.flink.rest_port))
    code = run_sql.main([str(SCRIPT), "--telemetry-topic", source, "--scored-topic", scored_topic,
                         # a file:// URI: its ':' must survive Flink's job-parameter map syntax
                         "--model-store", Path(store).as_uri(), "--model", REF, "--bounded",
                         "--bootstrap-servers", kafka_bootstrap, "--group-id", f"g-{scored_topic}"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    rendered = run_sql.rendered_path(_options(scored_topic=scored_topic), flink_cluster.settings)
    assert f"'topic' = '{source}'" in rendered.read_text()
    rendered.unlink()
    job_id = re.search(r"submitted job ([0-9a-f]{32})", printed.out).group(1)
    state = flink_cluster.wait_for_job(job_id, timeout=180)
    assert state == "FINISHED", flink_cluster.job_exception(job_id)

    out = read_checked(kafka_bootstrap, scored_topic, outputs(schema).scored)
    assert len(out) == len(records)
    assert len({(o["source_partition"], o["source_offset"]) for o in out}) == len(records)
    assert {o["model_version"] for o in out} == {manifest["version"]}
    assert all(o["score"] is not None for o in out)
    threshold = float(manifest["threshold"])
    # an entity's first readings are scored but never flagged (the model's window is filling)
    assert all(o["is_anomaly"] == (o["score"] > threshold and not (o["partial"] or "").startswith("warming"))
               for o in out)
    assert sum((o["partial"] or "").startswith("warming") for o in out) == 10 * (manifest["features"]["window"] - 1)

    # same scores as the UDF computes in plain Python on each vehicle's readings in log order: the
    # features and the window (LAG in SQL) reached ANOMALY as the model reads them
    from udfs.anomaly_score import AnomalyScore

    fn = AnomalyScore(store, REF)
    fn.open(None)
    expected = fn.eval(*model_inputs(pd.DataFrame(records), manifest))["score"].to_numpy()
    # event_time is written as ISO-8601 without zone (UTC) and without trailing zeros (".86")
    secret = read_pseudonym_secret(flink_cluster.settings.pseudonym.secret_file)
    assert "vehicle_id" not in out[0]  # raw ids never leave the job
    by_key = {(o["vehicle_id_pseudonym"], dt.datetime.fromisoformat(o["event_time"])): o["score"] for o in out}
    got = np.array([by_key[(pseudonym(secret, r["vehicle_id"]), r["event_time"].replace(tzinfo=None))]
                    for r in records])
    # float32 scoring: batches of other sizes round the last digits differently (udfs/autoencoder: 1e-5)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
