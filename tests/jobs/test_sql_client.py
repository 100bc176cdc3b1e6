"""The SQL scoring job: jobs/sql/score_events.sql run by jobs.run_sql with sql-client.sh on a standalone cluster.

Unit tests read the generated session (database ``job``, from the plan and the record contract);
the others submit the job to a real cluster reading the real broker.
"""
from __future__ import annotations

import datetime as dt
import re
import time

import numpy as np
import pandas as pd
import pytest

from connectors.avro_serde import feature_columns, load_schema, schema_id
from connectors.errors import SchemaError
from connectors.records import outputs
from jobs import run_sql
from jobs.core import scoring
from tests.contract import read_checked
from tests.sql.fleet import produce_fleet, send, unique_topic, write_hostile
from tests.sql.models import point_models, window_model  # noqa: F401 - the fixtures
from tests.stack.cluster_fixture import flink_cluster, free_port  # noqa: F401 - the fixture
from tests.trained_model import model_inputs
from udfs.preprocess import pseudonym
from vigil.settings import VigilSettings, read_pseudonym_secret


def _vigil(**overrides) -> VigilSettings:
    return VigilSettings.load({"kafka.bootstrap_servers": "127.0.0.1:1", "model.store": "/models", "tier": "none",
                               **overrides})


def _plan(manifest: dict | None = None, **options) -> scoring.ScoringPlan:
    schema = load_schema()
    manifest = manifest or {"version": "telemetry@3", "number": 3, "threshold": 1.0, "schema": schema_id(schema),
                            "features": {"names": list(reversed(feature_columns(schema)))}}
    opts = run_sql.RunSqlOptions(input_topic="t", **options)
    return scoring.assemble(_vigil(), opts, schema, manifest, scoring.load_suite(None, schema), job=run_sql.JOB)


def _statement(session, start: str) -> str:
    return next(s for s in session.statements if s.startswith(start))


def test_the_job_session_writes_each_output_exactly_as_the_contract():
    plan = _plan(bounded=True)
    session = run_sql.scoring_session(_vigil(), plan, "s1")
    out = outputs(plan.schema)
    for name, contract in (("scored", out.scored), ("alerts", out.alerts), ("dlq", out.dead_letters)):
        sink = _statement(session, f"CREATE TABLE `vigil`.`job`.`{name}`")
        assert re.findall(r"^  `(\w+)` ", sink, flags=re.M) == contract.names
        assert f"'topic' = '{plan.topics[name]}'" in sink
        assert "'sink.delivery-guarantee' = 'exactly-once'" in sink
        assert f"'sink.transactional-id-prefix' = '{plan.transactional_prefix}-{name}'" in sink
    rows = {"scored": "scored_rows", "alerts": "alert_rows", "dlq": "dead_letter_rows"}
    for name, view in rows.items():
        select = _statement(session, f"CREATE VIEW `vigil`.`job`.`{view}`")
        contract = {"scored": out.scored, "alerts": out.alerts, "dlq": out.dead_letters}[name]
        assert re.findall(r" AS `(\w+)`,?$", select, flags=re.M) == contract.names, name
    scoring_view = _statement(session, "CREATE VIEW `vigil`.`job`.`scoring`")
    # the model's features in its manifest's order; the raw id pseudonymised by the decoder
    assert "JOB_ANOMALY(" + ", ".join(f"`{f}`" for f in plan.features) + ")" in scoring_view
    assert "JOB_DECODE(`payload`, `kafka_headers`['vigil.schema'])" in scoring_view
    assert "`vehicle_id`" not in scoring_view
    dead = _statement(session, "CREATE VIEW `vigil`.`job`.`dead_letter_rows`")
    # only dead letters are sealed: the filter is in the query SEAL's result is read from
    assert "SEAL(`record_key`, `payload`) AS `sealed` FROM `vigil`.`job`.`scoring` WHERE `dlq_reason` IS NOT NULL" in dead
    source = _statement(session, "CREATE TABLE `vigil`.`job`.`source`")
    assert "'scan.bounded.mode' = 'latest-offset'" in source and "'properties.group.id' = 'vigil-score-events-sql'" in source
    assert "'scan.startup.mode' = 'group-offsets'" in source  # a resubmitted job goes on where it stopped
    # the long-running job keeps the cluster's restart strategy (flink-conf/, bounded)
    assert not any("restart-strategy" in s for s in session.statements)
    tier = _statement(session, "CREATE TABLE `vigil`.`job`.`tier`")
    assert "'connector' = 'blackhole'" in tier  # --tier none


def test_a_window_models_job_gives_anomaly_each_reading_with_its_entitys_previous_ones():
    schema = load_schema()
    features = feature_columns(schema)
    manifest = {"version": "telemetry@3", "number": 3, "threshold": 1.0, "schema": schema_id(schema),
                "features": {"names": features, "window": 4}}
    plan = _plan(manifest, context=5)  # --context 5: more readings than the model's window is allowed
    session = run_sql.scoring_session(_vigil(), plan, "s1")
    scoring_view = _statement(session, "CREATE VIEW `vigil`.`job`.`scoring`")
    lags = [f"`{f}__lag{k}`" for k in range(1, 5) for f in features]
    times = ["`event_time`"] + [f"`_time__lag{k}`" for k in range(1, 5)]
    assert "JOB_ANOMALY(" + ", ".join([f"`{f}`" for f in features] + lags + times) + ")" in scoring_view
    assert f"LAG(`{features[0]}`, 4) OVER w AS `{features[0]}__lag4`" in scoring_view
    assert "PARTITION BY CASE WHEN `error` IS NULL THEN `vehicle_id_pseudonym` END ORDER BY `_proc`" in scoring_view
    (anomaly,) = [f for f in session.functions if f.name == "JOB_ANOMALY"]
    assert anomaly.udf.handle.context == 5
    assert anomaly.arguments[-1] == ("_time__lag4", "TIMESTAMP(3)")


def test_alert_rows_follow_the_alert_contract_whatever_its_columns():
    """The alert view is generated from connectors/records.py: a contract with other columns (the
    episode events of a newer contract) gets exactly those columns, unknown ones NULL."""
    import dataclasses

    from pyflink.table import DataTypes

    from connectors.records import Column
    from jobs.sql import catalog

    out = outputs(load_schema())
    extra = (Column("episode_id", DataTypes.STRING()), Column("status", DataTypes.STRING()),
             Column("ended_at", DataTypes.TIMESTAMP(3)))
    changed = dataclasses.replace(out, alerts=dataclasses.replace(out.alerts, columns=out.alerts.columns + extra))
    expressions = catalog.alert_expressions(changed)
    assert [re.search(r" AS `(\w+)`$", e).group(1) for e in expressions] == changed.alerts.names
    by_name = dict(zip(changed.alerts.names, expressions))
    assert by_name["status"] == "CAST('open' AS STRING) AS `status`"
    assert by_name["ended_at"] == "CAST(NULL AS TIMESTAMP(3)) AS `ended_at`"
    assert by_name["episode_id"].startswith("CAST(CONCAT(`vehicle_id_pseudonym`, ':'")
    # the readings' row type is the contract's, field by field
    assert "ROW<`event_time` TIMESTAMP(3), `score` DOUBLE, `source_partition` INT, `source_offset` BIGINT, " \
           "`label` STRING>" in by_name["readings"]
    assert "CAST(`failure_label` AS STRING)) AS ROW<" in by_name["readings"]


def test_the_script_gets_the_plans_topics_and_model():
    plan = _plan(scored_topic="it's.scored")
    values = run_sql.placeholders(run_sql.RunSqlOptions(input_topic="t", define={"X": "1"}), plan)
    assert values == {"INPUT_TOPIC": "t", "SCORED_TOPIC": "it''s.scored", "ALERTS_TOPIC": "t.alerts",
                      "DLQ_TOPIC": "t.dlq", "MODEL": "t@champion", "BOOTSTRAP_SERVERS": "127.0.0.1:1", "X": "1",
                      "KAFKA_CONNECTION": "'properties.bootstrap.servers' = '127.0.0.1:1'"}
    text = run_sql.render(run_sql.DEFAULT_SCRIPT.read_text(), values)
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    assert not run_sql.PLACEHOLDER.search(code)
    assert [line for line in code.splitlines() if line.startswith("INSERT INTO")] == [
        "INSERT INTO `job`.`scored` SELECT * FROM `job`.`scored_rows`;",
        "INSERT INTO `job`.`alerts` SELECT * FROM `job`.`alert_rows`;",
        "INSERT INTO `job`.`dlq` SELECT * FROM `job`.`dead_letter_rows`;",
        "INSERT INTO `job`.`tier` SELECT * FROM `job`.`tier_rows`;"]


def test_missing_placeholder_is_named_with_its_line():
    with pytest.raises(ValueError, match=r"\$\{SCORED_TOPIC\} \(line 2\)"):
        run_sql.render("-- ${COMMENTS_ARE_LEFT_ALONE}\nSELECT '${SCORED_TOPIC}';\n", {}, "x.sql")


def test_model_missing_a_feature_of_the_topic_is_refused():
    manifest = {"version": "v9", "threshold": 1.0, "features": {"names": ["speed_kmh", "oil_pressure_kpa"]}}
    with pytest.raises(SchemaError, match=r"model v9 needs columns \['oil_pressure_kpa'\]"):
        _plan(manifest)


def test_job_parameters_quote_uris_for_flinks_map_syntax():
    rendered = run_sql.job_parameters({"vigil.model.uri": "file:///m", "vigil.model.ref": "m@champion"})
    assert rendered == "'vigil.model.uri:''file:///m''',vigil.model.ref:m@champion"


def test_cluster_not_running_is_reported_with_its_address(monkeypatch, capsys):
    port = free_port()
    monkeypatch.setenv("VIGIL_FLINK_REST_PORT", str(port))
    code = run_sql.main(["--input", "t", "--model-store", "/m"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{port}" in err and "python -m stack cluster up" in err


@pytest.mark.flink
@pytest.mark.kafka
def test_sql_job_scores_every_event_with_the_model(flink_cluster, window_model, kafka_bootstrap,  # noqa: F811
                                                   monkeypatch, capsys):
    """The trainer's default model (each vehicle's last readings, an ensemble): the SQL job gives
    ANOMALY each reading with its vehicle's previous ones (LAG over an OVER window) and scores
    exactly as the UDF does in plain Python on the readings in log order."""
    store, manifest = window_model
    fleet = produce_fleet(kafka_bootstrap, unique_topic("job"), events=500, failure_rate=0.05, hostile=False)
    monkeypatch.setenv("VIGIL_FLINK_REST_PORT", str(flink_cluster.settings.flink.rest_port))
    code = run_sql.main(["--input", fleet.topic, "--model", "telemetry@champion", "--bounded", "--wait",
                         # a file:// URI: the store travels inside the pickled function, no job parameter
                         "--model-store", f"file://{store}", "--tier", "none",
                         "--bootstrap-servers", kafka_bootstrap, "--group-id", f"g-{fleet.topic}"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    job_id = re.search(r"submitted job ([0-9a-f]{32})", printed.out).group(1)
    assert f"job {job_id} FINISHED" in printed.out

    out = read_checked(kafka_bootstrap, f"{fleet.topic}.scored", outputs(fleet.schema).scored)
    records = fleet.records
    assert len(out) == len(records)
    assert len({(o["source_partition"], o["source_offset"]) for o in out}) == len(records)
    assert {o["model_version"] for o in out} == {manifest["version"]}
    assert all(o["score"] is not None for o in out)
    threshold = float(manifest["threshold"])
    # an entity's first readings are scored but never flagged (the model's window is filling)
    assert all(o["is_anomaly"] == (o["score"] > threshold and not (o["partial"] or "").startswith("warming"))
               for o in out)
    assert sum((o["partial"] or "").startswith("warming") for o in out) == 10 * (manifest["features"]["window"] - 1)
    alerts = read_checked(kafka_bootstrap, f"{fleet.topic}.alerts", outputs(fleet.schema).alerts)
    assert len(alerts) == sum(o["is_anomaly"] for o in out)
    assert read_checked(kafka_bootstrap, f"{fleet.topic}.dlq", outputs(fleet.schema).dead_letters) == []

    # same scores as the UDF computes in plain Python on each vehicle's readings in log order: the
    # features and the window (LAG in SQL) reached ANOMALY as the model reads them
    from udfs.anomaly_score import AnomalyScore

    fn = AnomalyScore(store, "telemetry@champion")
    fn.open(None)
    expected = fn.eval(*model_inputs(pd.DataFrame(records), manifest))["score"].to_numpy()
    secret = read_pseudonym_secret(flink_cluster.settings.pseudonym.secret_file)
    assert "vehicle_id" not in out[0]  # raw ids never leave the job
    by_key = {(o["vehicle_id_pseudonym"], dt.datetime.fromisoformat(o["event_time"])): o["score"] for o in out}
    got = np.array([by_key[(pseudonym(secret, r["vehicle_id"]), r["event_time"].replace(tzinfo=None))]
                    for r in records])
    # float32 scoring: batches of other sizes round the last digits differently (udfs/autoencoder: 1e-5)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.flink
@pytest.mark.kafka
def test_hostile_records_go_to_the_dlq_and_the_sql_job_keeps_running(flink_cluster, point_models,  # noqa: F811
                                                                      kafka_bootstrap, monkeypatch, capsys):
    store, _, _ = point_models
    fleet = produce_fleet(kafka_bootstrap, unique_topic("hostile"), events=200, hostile=False)
    write_hostile(kafka_bootstrap, fleet)
    monkeypatch.setenv("VIGIL_FLINK_REST_PORT", str(flink_cluster.settings.flink.rest_port))
    code = run_sql.main(["--input", fleet.topic, "--model", "telemetry@champion", "--model-store", store,
                         "--tier", "none", "--bootstrap-servers", kafka_bootstrap, "--group-id", f"g-{fleet.topic}"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    job_id = re.search(r"submitted job ([0-9a-f]{32})", printed.out).group(1)
    out = outputs(fleet.schema)

    def wait_for(topic: str, contract, count: int) -> list[dict]:
        deadline = time.monotonic() + 240
        got: list[dict] = []
        while time.monotonic() < deadline:
            got = read_checked(kafka_bootstrap, topic, contract)
            if len(got) >= count:
                return got
            state = flink_cluster.job(job_id)["state"]
            assert state in ("CREATED", "RUNNING"), f"job {job_id} is {state}: {flink_cluster.job_exception(job_id)}"
            time.sleep(2)
        raise AssertionError(f"{topic} has {len(got)} of {count} records after 240 s")

    try:
        dead = wait_for(f"{fleet.topic}.dlq", out.dead_letters, len(fleet.hostile))
        assert sorted(d["stage"] for d in dead) == sorted(fleet.hostile.values())
        assert all(d["source_topic"] == fleet.topic and d["payload_sha256"] and d["model_version"] for d in dead
                   if d["stage"] != "undecodable")
        assert all("veh-" not in str(d) for d in dead)  # raw ids never reach the dead letters either
        wait_for(f"{fleet.topic}.scored", out.scored, len(fleet.records))
        # it keeps running: what arrives after the hostile records is scored as well
        more = [dict(r, event_time=r["event_time"] + dt.timedelta(minutes=5)) for r in fleet.records[:50]]
        send(kafka_bootstrap, fleet, more)
        scored = wait_for(f"{fleet.topic}.scored", out.scored, len(fleet.records) + len(more))
        assert len(scored) == len(fleet.records) + len(more)
        assert flink_cluster.job(job_id)["state"] == "RUNNING"
    finally:
        flink_cluster.cancel(job_id)
        flink_cluster.wait_for_job(job_id, timeout=60)
