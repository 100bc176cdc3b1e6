"""`vigil sql`: the generated session (topics as tables, models as functions) and what the client reports.

Unit tests read the generated statements and the client's error parsing; the others run
sql-client.sh on a standalone cluster against the real broker.
"""
from __future__ import annotations

import contextlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connectors.avro_serde import load_schema
from connectors.model_registry import ModelRegistry
from connectors.records import decoded_columns
from jobs import replay_file, sql_session
from jobs.sql import catalog, client, functions
from tests.sql.fleet import produce_fleet, unique_topic
from tests.sql.sql_output import result_sets, sql_blocks
from tests.stack.cluster_fixture import flink_cluster  # noqa: F401 - the fixture
from tests.trained_model import model_inputs
from udfs.anomaly_score import AnomalyScore
from vigil.settings import PROJECT_ROOT, VigilSettings

FEATURES = ["speed_kmh", "engine_rpm"]


def _settings(**overrides) -> catalog.SessionSettings:
    values = dict(bootstrap_servers="127.0.0.1:1", model_store="/models", secret_file="/secret", python="/py",
                  session_id="s1", tier=None)
    return catalog.SessionSettings(**{**values, **overrides})


def _manifest(version: str = "telemetry@1", features=FEATURES, **extra) -> dict:
    return {"version": version, "number": 1, "threshold": 0.5, "schema": "x@1",
            "features": {"names": list(features), **extra}}


# --- the generated session ------------------------------------------------------------------------------

def test_topic_view_has_the_decoded_columns_then_error_and_kafka_metadata():
    schema = load_schema()
    session = catalog.build_session(_settings(), {"telemetry": schema}, [], existing={"telemetry"})
    view = next(s for s in session.statements if s.startswith("CREATE VIEW `vigil`.`topics`.`telemetry`"))
    first_select = view.splitlines()[1]
    columns = re.findall(r"`(\w+)`", first_select.split(" AS `error`")[0])
    assert columns[:len(decoded_columns(schema))] == [c.name for c in decoded_columns(schema)]
    assert "vehicle_id" not in columns and "vehicle_id_pseudonym" in columns  # raw ids never reach SQL
    assert first_select.endswith("`error`, `kafka_partition`, `kafka_offset`, `kafka_timestamp`")
    assert "DECODE_TELEMETRY(`payload`, `kafka_headers`['vigil.schema'])" in view
    raw = next(s for s in session.statements if s.startswith("CREATE TABLE `vigil`.`raw`.`telemetry`"))
    assert "WATERMARK FOR `kafka_timestamp`" in raw and "'value.format' = 'raw'" in raw
    # outputs no job has written yet are not declared
    assert session.tables == ["telemetry"]


def test_idle_partitions_release_windows_only_in_unbounded_sessions():
    idle = "SET 'table.exec.source.idle-timeout' = '10 s'"
    assert idle in catalog.build_session(_settings(), {}, []).statements
    # bounded: the end of input closes every window; a slow partition marked idle would lose records
    assert idle not in catalog.build_session(_settings(bounded=True), {}, []).statements


def test_bounded_sessions_watermark_so_that_no_record_is_late():
    """A scoring job's outputs are not in event-time order within a partition; a bounded session's
    windows see every record (the end of input closes them), an unbounded one's close 5 s behind."""
    schema = load_schema()
    existing = {"t", "t.scored", "t.alerts", "t.dlq"}
    for bounded, delay in ((False, "INTERVAL '5' SECOND"), (True, "INTERVAL '365' DAY(3)")):
        session = catalog.build_session(_settings(bounded=bounded), {"t": schema}, [], existing=existing)
        scored = next(s for s in session.statements if s.startswith("CREATE TABLE `vigil`.`topics`.`t.scored`"))
        raw = next(s for s in session.statements if s.startswith("CREATE TABLE `vigil`.`raw`.`t`"))
        assert f"WATERMARK FOR `event_time` AS `event_time` - {delay}" in scored
        assert f"WATERMARK FOR `kafka_timestamp` AS `kafka_timestamp` - {delay}" in raw


def test_companion_tables_are_the_contract_and_write_exactly_once():
    schema = load_schema()
    existing = {"t", "t.scored", "t.alerts", "t.dlq"}
    session = catalog.build_session(_settings(tier="file:///tier"), {"t": schema}, [], existing=existing)
    assert session.tables == ["t", "t.scored", "t.alerts", "t.dlq", "t.tier"]
    from connectors.records import outputs

    scored = next(s for s in session.statements if s.startswith("CREATE TABLE `vigil`.`topics`.`t.scored`"))
    declared = re.findall(r"^  `(\w+)` ", scored, flags=re.M)
    assert declared == [*outputs(schema).scored.names, "kafka_partition", "kafka_offset", "kafka_timestamp"]
    assert all("METADATA FROM" in line for line in scored.splitlines() if line.startswith("  `kafka_"))
    assert "'sink.delivery-guarantee' = 'exactly-once'" in scored
    assert "'sink.transactional-id-prefix' = 'vigil-sql-s1-t.scored'" in scored
    assert "WATERMARK FOR `event_time`" in scored
    tier = next(s for s in session.statements if "`t.tier`" in s)
    assert "PARTITIONED BY (`dt`, `hr`)" in tier and "'format' = 'parquet'" in tier


def test_each_topics_tier_table_reads_its_own_folder_unless_one_tier_is_set(tmp_path):
    settings = VigilSettings.load({"home": tmp_path, "kafka.bootstrap_servers": "127.0.0.1:1"})
    s = client.session_settings(settings, "s1")
    assert s.tier_for("plant-a") == (tmp_path / "tier" / "plant-a").as_uri() == settings.tier_for("plant-a")
    assert client.session_settings(settings.evolve(tier="s3a://b/t"), "s1").tier_for("plant-a") == "s3a://b/t"
    assert client.session_settings(settings.evolve(tier="none"), "s1").tier_for("plant-a") is None
    session = catalog.build_session(s, {"a": load_schema(), "b": load_schema()}, [])
    assert any(f"'path' = '{(tmp_path / 'tier' / 'b').as_uri()}'" in x for x in session.statements
               if x.startswith("CREATE TABLE `vigil`.`topics`.`b.tier`"))


def test_a_registered_topic_named_like_an_output_keeps_its_own_table():
    schema = load_schema()
    topics = {"t": schema, "t.scored": schema}
    session = catalog.build_session(_settings(), topics, [], existing={"t", "t.scored"})
    assert session.topics == ["t", "t.scored"]
    assert sum("`vigil`.`topics`.`t.scored`" in s for s in session.statements) == 1
    assert any(s.startswith("CREATE VIEW `vigil`.`topics`.`t.scored`") for s in session.statements)


def test_function_names_stay_unique_when_topic_names_sanitise_alike():
    schema = load_schema()
    session = catalog.build_session(_settings(), {"plant-a": schema, "plant_a": schema}, [])
    names = [f.name for f in session.functions]
    assert len(names) == len(set(names))
    assert "DECODE_PLANT_A" in names and any(n.startswith("DECODE_PLANT_A_") for n in names)


def test_model_arguments_come_from_the_manifest_in_its_order():
    inputs = catalog.model_inputs_sql(_manifest(features=["b", "a"]))
    assert [(i.name, i.type, i.expression) for i in inputs] == [("b", "DOUBLE", "`b`"), ("a", "DOUBLE", "`a`")]
    assert catalog.anomaly_call("ANOMALY_T", _manifest(features=["b", "a"])) == "ANOMALY_T(`b`, `a`)"


def test_a_window_model_reads_each_reading_with_its_entitys_last_ones():
    """A model with a window: its arguments are every reading's sensors newest first, then their
    times (as the jobs pass them), its view ``<topic>.window<W>`` holds them (LAG per entity), and
    ``model_functions`` says where to call it from."""
    from connectors.avro_serde import schema_id

    schema = load_schema()
    manifest = {**_manifest(window=3), "schema": schema_id(schema)}
    inputs = catalog.model_inputs_sql(manifest, ("event_time", "TIMESTAMP(3)"))
    assert [i.name for i in inputs] == ["speed_kmh", "engine_rpm", "speed_kmh__lag1", "engine_rpm__lag1",
                                        "speed_kmh__lag2", "engine_rpm__lag2", "event_time", "_time__lag1",
                                        "_time__lag2"]
    assert [i.type for i in inputs] == ["DOUBLE"] * 6 + ["TIMESTAMP(3)"] * 3
    models = [catalog.ModelFunction("ANOMALY_T", "t@champion", manifest)]
    session = catalog.build_session(_settings(), {"telemetry": schema}, models)
    (placed,) = session.models
    assert placed.source == "telemetry.window3" and "telemetry.window3" in session.tables
    view = next(s for s in session.statements if s.startswith("CREATE VIEW `vigil`.`topics`.`telemetry.window3`"))
    assert "LAG(`speed_kmh`, 2) OVER w AS `speed_kmh__lag2`" in view
    assert "LAG(`event_time`, 1) OVER w AS `_time__lag1`" in view
    assert "WINDOW w AS (PARTITION BY CASE WHEN `error` IS NULL THEN `vehicle_id_pseudonym` END ORDER BY `_proc`)" in view
    assert "LAG(`oil_temp_c`" not in view  # only what the session's window models read
    (function,) = [f for f in session.functions if f.name == "ANOMALY_T"]
    assert function.signature().startswith("ANOMALY_T(speed_kmh => DOUBLE, engine_rpm => DOUBLE, speed_kmh__lag1")
    assert function.signature().endswith("event_time => TIMESTAMP(3), _time__lag1 => TIMESTAMP(3), "
                                         "_time__lag2 => TIMESTAMP(3))")
    assert function.udf.handle.context == 3
    (anomaly,) = [f for f in session.functions if f.name == "ANOMALY"]
    assert dict(anomaly.extra)["types.0"] == "\t".join(["DOUBLE"] * 6 + ["TIMESTAMP(3)"] * 3)
    listing = next(s for s in session.statements if "`model_functions` AS" in s)
    assert "'ANOMALY_T(`speed_kmh`, `engine_rpm`, `speed_kmh__lag1`" in listing and "3, 'telemetry.window3')" in listing
    # scored without writing the call: the model's own view of the topic
    scored_by = next(s for s in session.statements
                     if s.startswith("CREATE VIEW `vigil`.`topics`.`telemetry.scored_by.t@champion`"))
    assert "FROM `vigil`.`topics`.`telemetry.window3` WHERE `error` IS NULL" in scored_by
    assert "`s`.`score` AS `score`, `s`.`is_anomaly` AS `is_anomaly`, `s`.`model_version` AS `model_version`" in scored_by


def test_every_alias_of_every_model_becomes_a_function(point_models, tmp_path):
    store, champion, _ = point_models
    registry = ModelRegistry(store)
    found = catalog.model_functions(registry)
    assert [(m.function, m.ref, m.manifest["version"]) for m in found] == [
        ("ANOMALY_TELEMETRY", "telemetry@champion", "telemetry@1"),
        ("ANOMALY_TELEMETRY_CHALLENGER", "telemetry@challenger", "telemetry@2")]
    pinned = catalog.model_functions(registry, ["telemetry@2", "telemetry"])
    assert [m.function for m in pinned] == ["ANOMALY_TELEMETRY_V2", "ANOMALY_TELEMETRY"]
    from connectors.model_registry import RegistryError

    with pytest.raises(RegistryError, match="has no alias 'nightly'"):
        catalog.model_functions(registry, ["telemetry@nightly"])
    function = catalog.anomaly_function("ANOMALY_TELEMETRY", store, "telemetry@champion", champion)
    assert function.signature() == "ANOMALY_TELEMETRY(" + ", ".join(
        f"{f} => DOUBLE" for f in champion["features"]["names"]) + ")"
    assert function.result.startswith("ROW<`score` DOUBLE, `is_anomaly` BOOLEAN, `model_version` STRING")
    view = catalog.models_view(found)
    assert "'ANOMALY_TELEMETRY_CHALLENGER', 'telemetry@challenger', 'telemetry@2'" in view


def test_the_jar_holds_a_class_and_the_pickled_function_per_name(tmp_path):
    import base64

    import cloudpickle

    settings = VigilSettings.load()
    function = catalog.pseudonym_function("/some/secret")
    jar = functions.build_jar([function], tmp_path / "f.jar", settings.flink_home / "lib", tmp_path / "classes")
    with zipfile.ZipFile(jar) as z:
        names = set(z.namelist())
        spec = z.read("dev/vigil/sql/functions/PSEUDONYM.properties").decode()
    assert {"dev/vigil/sql/NamedPythonFunction.class", "dev/vigil/sql/fn/PSEUDONYM.class"} <= names
    entries = dict(line.split("=", 1) for line in spec.splitlines())
    assert entries["arguments"] == "id" and entries["types"] == "STRING" and entries["kind"] == "PANDAS"
    restored = cloudpickle.loads(base64.b64decode(entries["payload"].replace("\\=", "=")))
    assert type(restored).__name__ == "Pseudonymise" and restored.secret_file == "/some/secret"
    assert oct(jar.stat().st_mode & 0o777) == "0o600"


def test_the_session_wide_anomaly_lists_every_model_and_its_features(tmp_path):
    models = [catalog.ModelFunction("ANOMALY_T", "t@champion", _manifest("t@1", ["a", "b"])),
              catalog.ModelFunction("ANOMALY_T_V2", "t@2", _manifest("t@2", ["c"]))]
    session = catalog.build_session(_settings(), {}, models)
    (function,) = [f for f in session.functions if f.name == "ANOMALY"]
    assert function.base == "dev.vigil.sql.ModelAnomalyFunction"
    assert dict(function.extra) == {"models": "t@champion\tt@2", "features.0": "a\tb", "features.1": "c",
                                    "types.0": "DOUBLE\tDOUBLE", "types.1": "DOUBLE"}
    assert sorted(function.udf.scorers) == ["t@2", "t@champion"]
    assert function.udf.scorers["t@2"].handle.features == ["c"]
    jar = functions.build_jar(session.functions, tmp_path / "f.jar", VigilSettings.load().flink_home / "lib",
                              tmp_path / "classes")
    with zipfile.ZipFile(jar) as z:
        assert "dev/vigil/sql/fn/ANOMALY.class" in z.namelist()
        spec = z.read("dev/vigil/sql/functions/ANOMALY.properties").decode()
    assert "models=t@champion\\tt@2\n" in spec and "features.0=a\\tb\n" in spec
    # no model, no ANOMALY
    assert not any(f.name == "ANOMALY" for f in catalog.build_session(_settings(), {}, []).functions)


def test_properties_escaping_keeps_tabs_equals_and_unicode():
    text = functions._properties_escape("a\tb=c:d é\\")
    assert text == "a\\tb\\=c\\:d \\u00e9\\\\"


# --- what the client reports -------------------------------------------------------------------------------

PLANNER_OUTPUT = """Flink SQL> SELECT ANOMALY_T(speed_kmh)[ERROR] Could not execute SQL statement. Reason:
org.apache.calcite.sql.validate.SqlValidatorException: No match found for function signature ANOMALY_T(<NUMERIC>).
Supported signatures are:
ANOMALY_T(speed_kmh => DOUBLE, engine_rpm => DOUBLE)

Shutting down the session...
"""

WORKER_TRACE = """org.apache.flink.runtime.JobException: Recovery is suppressed by FixedDelayRestartBackoffTimeStrategy
Caused by: java.lang.RuntimeException: Error received from SDK harness for instruction 4: Traceback (most recent call last):
  File "/x/worker.py", line 1, in open
    raise SettingsError("no pseudonymisation secret: /gone does not exist")
vigil.settings.SettingsError: no pseudonymisation secret: /gone does not exist
\tat org.apache.beam.runners.fnexecution.control.FnApiControlClient
"""


def test_a_refused_statement_is_one_line_naming_the_signature():
    error = client.statement_error(PLANNER_OUTPUT)
    assert error == ("No match found for function signature ANOMALY_T(<NUMERIC>). Supported signatures are: "
                     "ANOMALY_T(speed_kmh => DOUBLE, engine_rpm => DOUBLE)")
    assert client.statement_error("Flink SQL> [INFO] Execute statement succeeded.") is None


def test_the_python_error_of_a_worker_is_found_in_a_java_trace():
    assert client.python_error(WORKER_TRACE) == ("vigil.settings.SettingsError: no pseudonymisation secret: /gone "
                                                 "does not exist")
    assert client.python_error("java.lang.IllegalStateException: boom") is None


def test_result_tables_are_read_with_their_changelog_applied():
    output = """Flink SQL> +----+-------+---------+
| op | stage | records |
+----+-------+---------+
| +I |     a |       1 |
| -U |     a |       1 |
| +U |     a |       2 |
| +I |     b |  <NULL> |
+----+-------+---------+
Received a total of 4 rows

Flink SQL> Empty set
"""
    assert result_sets(output) == [[{"stage": "a", "records": "2"}, {"stage": "b", "records": None}], []]
    blocks = sql_blocks(PROJECT_ROOT / "docs" / "sql.md")
    assert blocks and all(b.statements for b in blocks)


# --- on a cluster ------------------------------------------------------------------------------------------

def _vigil_sql(cluster, monkeypatch, args: list[str], script: str, tmp_path: Path) -> tuple[int, str, str]:
    path = tmp_path / f"q{len(list(tmp_path.glob('q*.sql')))}.sql"
    path.write_text(script)
    monkeypatch.setenv("VIGIL_FLINK_REST_PORT", str(cluster.settings.flink.rest_port))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = sql_session.main(["--file", str(path), *args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fleet(kafka_bootstrap):
    return produce_fleet(kafka_bootstrap, unique_topic("session"), events=300)


def _call(function: str, manifest: dict) -> str:
    return catalog.anomaly_call(function, manifest)


def _ref_call(ref: str, manifest: dict) -> str:
    """``ANOMALY('name@alias', `f1`, ...)``: the session-wide function, the model named by its first argument."""
    return f"ANOMALY('{ref}', " + ", ".join(f"`{f}`" for f in manifest["features"]["names"]) + ")"


@pytest.mark.kafka
def test_vigil_sql_init_only_writes_the_session_and_prints_the_client_command(fleet, point_models, kafka_bootstrap,
                                                                             monkeypatch, capsys):
    """`vigil sql` is one command: the session's init script and jar are generated from the broker's
    schema store and the registry; --init-only prints the sql-client.sh line instead of starting it."""
    store, champion, _ = point_models
    monkeypatch.setenv("VIGIL_FLINK_REST_PORT", "1")  # nothing is started: no cluster needed
    code = sql_session.main(["--init-only", "--topic", fleet.topic, "--model-store", store,
                             "--bootstrap-servers", kafka_bootstrap])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "1 topic(s) as tables" in printed.err and "2 model function(s)" in printed.err
    command = printed.out.strip().splitlines()[-1]
    init = Path(re.search(r" -i (\S+/init\.sql)", command).group(1))
    assert "sql-client.sh" in command and init.is_file() and oct(init.stat().st_mode & 0o777) == "0o600"
    text = init.read_text()
    assert f"CREATE VIEW `vigil`.`topics`.`{fleet.topic}` AS" in text
    assert "CREATE FUNCTION `vigil`.`topics`.ANOMALY_TELEMETRY AS 'dev.vigil.sql.fn.ANOMALY_TELEMETRY'" in text
    assert "CREATE FUNCTION `vigil`.`topics`.ANOMALY_TELEMETRY_CHALLENGER AS" in text
    assert "USE CATALOG `vigil`" in text
    assert (init.parent / "functions.jar").is_file()


@pytest.mark.flink
@pytest.mark.kafka
def test_a_replayed_topic_is_queried_with_no_ddl(flink_cluster, kafka_bootstrap, monkeypatch, tmp_path):  # noqa: F811
    topic = unique_topic("replayed")
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-03-01", periods=60, freq="s"),
                          "machineID": [f"m{i % 3}" for i in range(60)],
                          "temperature": [20.0 + i / 10 for i in range(60)],
                          "vibration": [0.5] * 59 + [float("nan")]})
    csv = tmp_path / "plant.csv"
    frame.to_csv(csv, index=False)
    assert replay_file.main([str(csv), "--topic", topic, "--bootstrap-servers", kafka_bootstrap]) == 0
    code, out, err = _vigil_sql(flink_cluster, monkeypatch, ["--topic", topic, "--bounded",
                                                             "--bootstrap-servers", kafka_bootstrap], f"""
SELECT machineID_pseudonym, COUNT(*) AS readings, MAX(temperature) AS hottest, COUNT(vibration) AS vibrations,
       COUNT(error) AS errors
FROM `{topic}` GROUP BY machineID_pseudonym;
""", tmp_path)
    assert code == 0, err
    (rows,) = result_sets(out)
    assert len(rows) == 3 and all(r["machineID_pseudonym"].startswith("p-") for r in rows)
    assert sum(int(r["readings"]) for r in rows) == 60
    assert max(float(r["hottest"]) for r in rows) == pytest.approx(25.9)
    assert sum(int(r["vibrations"]) for r in rows) == 59  # the gap is null, not an error
    assert sum(int(r["errors"]) for r in rows) == 0


@pytest.mark.flink
@pytest.mark.kafka
def test_several_named_models_score_in_one_session(flink_cluster, fleet, point_models, kafka_bootstrap,  # noqa: F811
                                                   monkeypatch, tmp_path):
    store, champion, challenger = point_models
    refs = ["telemetry@champion", "telemetry@challenger", "telemetry@1"]
    # arguments bound by name, in reverse order: the same call as the positional one
    by_name = "ANOMALY_TELEMETRY(" + ", ".join(f"{f} => `{f}`" for f in reversed(champion["features"]["names"])) + ")"
    code, out, err = _vigil_sql(
        flink_cluster, monkeypatch,
        ["--topic", fleet.topic, "--bounded", "--model-store", store, "--bootstrap-servers", kafka_bootstrap,
         *[a for r in refs for a in ("--model", r)]], f"""
SELECT `function`, `model`, `version` FROM model_functions;
SELECT a.model_version AS a, b.model_version AS b, c.model_version AS c, a.score AS sa, b.score AS sb, c.score AS sc,
       d.score AS sd, e.model_version AS e, e.score AS se, f.score AS sf
FROM (SELECT {_call('ANOMALY_TELEMETRY', champion)} AS a, {_call('ANOMALY_TELEMETRY_CHALLENGER', challenger)} AS b,
             {_call('ANOMALY_TELEMETRY_V1', champion)} AS c, {by_name} AS d,
             {_ref_call('telemetry@challenger', challenger)} AS e, {_ref_call('telemetry@champion', champion)} AS f
      FROM `{fleet.topic}` WHERE error IS NULL);
""", tmp_path)
    assert code == 0, err
    listed, scored = result_sets(out)
    assert {(r["function"], r["model"], r["version"]) for r in listed} == {
        ("ANOMALY_TELEMETRY", "telemetry@champion", "telemetry@1"),
        ("ANOMALY_TELEMETRY_CHALLENGER", "telemetry@challenger", "telemetry@2"),
        ("ANOMALY_TELEMETRY_V1", "telemetry@1", "telemetry@1")}
    assert len(scored) == len(fleet.records)
    assert {(r["a"], r["b"], r["c"]) for r in scored} == {("telemetry@1", "telemetry@2", "telemetry@1")}
    assert all(r["sa"] == r["sc"] for r in scored)  # the champion is version 1
    assert all(r["sa"] == r["sd"] for r in scored)  # named arguments reach the model in its order
    # ANOMALY('name@alias', ...): the model its first argument names, in the same query
    assert {r["e"] for r in scored} == {"telemetry@2"}
    assert all(r["se"] == r["sb"] and r["sf"] == r["sa"] for r in scored)
    assert sum(r["sa"] != r["sb"] for r in scored) > len(scored) // 2


@pytest.mark.flink
@pytest.mark.kafka
def test_a_window_model_scores_a_topic_through_its_view(flink_cluster, fleet, window_model, kafka_bootstrap,  # noqa: F811
                                                        monkeypatch, tmp_path):
    """The trainer's default model reads each vehicle's last readings: `<topic>.scored_by.<ref>` gives
    it each reading with its vehicle's previous ones (LAG in the session) and scores as plain Python."""
    store, manifest = window_model
    window = int(manifest["features"]["window"])
    code, out, err = _vigil_sql(
        flink_cluster, monkeypatch,
        ["--topic", fleet.topic, "--bounded", "--model-store", store, "--bootstrap-servers", kafka_bootstrap], f"""
SELECT `model`, `window`, `source` = '{fleet.topic}.window8' AS at_view FROM model_functions;
SELECT score, is_anomaly, model_version, `partial` FROM `{fleet.topic}.scored_by.telemetry@champion`;
""", tmp_path)
    assert code == 0, err
    listed, scored = result_sets(out)
    # (the client cuts long values for display: the view's name is compared in SQL)
    assert window == 8 and listed == [{"model": "telemetry@champion", "window": "8", "at_view": "TRUE"}]
    assert len(scored) == len(fleet.records)  # the hostile records have an error: not scored
    assert {r["model_version"] for r in scored} == {manifest["version"]}
    assert sum((r["partial"] or "").startswith("warming") for r in scored) == 10 * (window - 1)
    fn = AnomalyScore(store, "telemetry@champion")
    fn.open(None)
    expected = fn.eval(*model_inputs(pd.DataFrame(fleet.records), manifest))["score"].to_numpy()
    np.testing.assert_allclose(sorted(float(r["score"]) for r in scored), sorted(expected), rtol=1e-5)


@pytest.mark.flink
@pytest.mark.kafka
def test_a_wrong_argument_list_is_refused_at_planning_naming_the_features(flink_cluster, fleet,  # noqa: F811
                                                                          point_models, kafka_bootstrap,
                                                                          monkeypatch, tmp_path):
    store, champion, _ = point_models
    features = champion["features"]["names"]
    args = ["--topic", fleet.topic, "--bounded", "--model-store", store, "--bootstrap-servers", kafka_bootstrap]
    jobs_before = len(flink_cluster.jobs())
    code, out, err = _vigil_sql(flink_cluster, monkeypatch, args,
                                f"SELECT ANOMALY_TELEMETRY(speed_kmh, engine_rpm) FROM `{fleet.topic}`;\n", tmp_path)
    assert code == 1
    (line,) = [e for e in err.splitlines() if e.startswith("error:")]
    assert "No match found for function signature ANOMALY_TELEMETRY(<NUMERIC>, <NUMERIC>)" in line
    assert "ANOMALY_TELEMETRY(" + ", ".join(f"{f} => DOUBLE" for f in features) + ")" in line
    # a text column where the model reads a number: refused too, naming the position and the signature
    wrong_type = _call("ANOMALY_TELEMETRY", champion).replace("`speed_kmh`", "firmware_version")
    code, out, err = _vigil_sql(flink_cluster, monkeypatch, args, f"SELECT {wrong_type} FROM `{fleet.topic}`;\n",
                                tmp_path)
    assert code == 1
    (line,) = [e for e in err.splitlines() if e.startswith("error:")]
    assert "Invalid argument type at position 0. Data type DOUBLE expected but STRING passed." in line
    assert "Expected signatures are:" in line
    assert "ANOMALY_TELEMETRY(" + ", ".join(f"{f} => DOUBLE" for f in features) + ")" in line
    # ANOMALY('name@alias', ...) with too few features: refused, naming the model's features in order
    code, out, err = _vigil_sql(flink_cluster, monkeypatch, args,
                                f"SELECT ANOMALY('telemetry@champion', speed_kmh, engine_rpm) FROM `{fleet.topic}`;\n",
                                tmp_path)
    assert code == 1
    (line,) = [e for e in err.splitlines() if e.startswith("error:")]
    assert f"ANOMALY('telemetry@champion', ...) takes the model's {len(features)} features" in line
    assert "ANOMALY('telemetry@champion', " + ", ".join(features) + ")" in line
    assert "got 2 argument(s) after the model" in line
    # a reference the session does not have: refused, naming the session's models
    code, out, err = _vigil_sql(flink_cluster, monkeypatch, args,
                                f"SELECT {_ref_call('telemetry@nightly', champion)} FROM `{fleet.topic}`;\n", tmp_path)
    assert code == 1
    (line,) = [e for e in err.splitlines() if e.startswith("error:")]
    assert "ANOMALY: no model 'telemetry@nightly' in this session" in line
    assert "'telemetry@champion'" in line and "'telemetry@challenger'" in line
    # a text column where the model reads a number
    wrong = _ref_call("telemetry@champion", champion).replace("`speed_kmh`", "firmware_version")
    code, out, err = _vigil_sql(flink_cluster, monkeypatch, args, f"SELECT {wrong} FROM `{fleet.topic}`;\n", tmp_path)
    assert code == 1
    (line,) = [e for e in err.splitlines() if e.startswith("error:")]
    position = features.index("speed_kmh") + 1
    assert f"argument {position} is feature speed_kmh, a number; got STRING" in line
    # constants only: a Python worker would get no column to read them from
    code, out, err = _vigil_sql(flink_cluster, monkeypatch, args,
                                f"SELECT * FROM `{fleet.topic}` WHERE vehicle_id_pseudonym = PSEUDONYM('veh-0001');\n",
                                tmp_path)
    assert code == 1 and "PSEUDONYM is a Python function: give it at least one column" in err
    assert len(flink_cluster.jobs()) == jobs_before  # planning refused them: nothing was submitted


@pytest.mark.flink
@pytest.mark.kafka
def test_a_failing_python_worker_is_reported_in_one_line_and_the_job_ends(flink_cluster, fleet,  # noqa: F811
                                                                          kafka_bootstrap, tmp_path):
    # A TaskManager that cannot read the pseudonymisation secret: the decoder raises in open().
    secret = tmp_path / "pseudonym.key"
    secret.write_text("a-secret-the-workers-will-not-find")
    settings = flink_cluster.settings.evolve(pseudonym__secret_file=str(secret))
    session_id = client.new_session_id()
    s = client.session_settings(settings, session_id, bounded=True)
    made = catalog.build_session(s, {fleet.topic: fleet.schema}, [])
    files = client.write_session(made, settings, session_id, extra=client.SCRIPT_SETTINGS)
    secret.unlink()
    script = tmp_path / "q.sql"
    script.write_text(f"SELECT COUNT(*) FROM `{fleet.topic}` WHERE error IS NULL;\n")  # (reads decoded columns)
    result = client.run_script(flink_cluster, files, script, timeout=300)
    assert result.error is not None and "\n" not in result.error
    assert re.match(r"job [0-9a-f]{32} failed in a Python worker: vigil\.settings\.SettingsError: no "
                    r"pseudonymisation secret: .*pseudonym\.key does not exist", result.error), result.error
    job_id = re.search(r"job ([0-9a-f]{32})", result.error).group(1)
    assert flink_cluster.job(job_id)["state"] == "FAILED"  # bounded restarts: it ended, it does not loop

