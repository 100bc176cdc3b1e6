"""The scoring core without a broker: raw Kafka-shaped rows in through from_elements, outputs collected.

Both jobs' declarations (jobs/core/scoring.build, jobs/core/scoring_stream.build) get the same raw
records, good and hostile; each record must come out exactly once (scored or dead-lettered), with
exactly the record contract's fields, the same scores as the model gives in plain Python on the
temporal context the trainer computes (udfs/feature_set.context_from_frame: no train/serve skew),
the same dead-letter reasons and the same alarm episodes in both jobs.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, load_schema
from jobs import simulation
from jobs.core import scoring, scoring_stream
from jobs.core.scoring import ScoreOptions, assemble, load_suite
from tests.jobs.raw_records import RawRecord, collect, encoded, raw_table
from tests.trained_model import REF
from udfs.dead_letters import PREFIX_BYTES, open_payload
from udfs.preprocess import pseudonym
from vigil.settings import VigilSettings

pytestmark = pytest.mark.flink
SECRET = "core-secret"


@pytest.fixture(scope="module")
def t_env(flink_activated):
    from jobs.core.flink_env import stream_table_environment

    return stream_table_environment(parallelism__default=1)[1]


@pytest.fixture(scope="module")
def plan(trained_model, tmp_path_factory):
    schema = load_schema()
    key = tmp_path_factory.mktemp("secret") / "key"
    key.write_text(SECRET)
    settings = VigilSettings.load({"model.store": trained_model[0], "pseudonym.secret_file": str(key),
                                   "tier": "none"})
    options = ScoreOptions(input_topic="raw.telemetry", model=REF, bounded=True, alarm_enter=3, alarm_within=5,
                           alarm_clear=2)
    return assemble(settings, options, schema, trained_model[1], load_suite(None, schema), job="test-core")


HOT = "VIN-HOT"
BURST = range(10, 14)  # the readings of HOT whose front-left tire is flat


@pytest.fixture(scope="module")
def records():
    """Good readings of 5 vehicles (one of them, HOT, has a flat tire for 4 readings in the middle of 30) and
    hostile records."""
    schema = load_schema()
    good = list(simulation.generate(simulation.FleetSettings(vehicles=4, events=36, seed=5, failure_rate=0.0)))
    template = good[-1]
    hot = list(simulation.generate(simulation.FleetSettings(vehicles=1, events=30, seed=9, failure_rate=0.0)))
    for i, r in enumerate(hot):
        r["vehicle_id"] = HOT
        if i in BURST:
            r.update(tire_pressure_fl_kpa=15.0, failure_label="tire_leak")
    raw = encoded(schema, good + hot, "vehicle_id")
    burst = hot
    serialize = AvroSerializer(schema)
    valid = serialize(template)
    header = {SCHEMA_HEADER: raw[0].headers[SCHEMA_HEADER]}
    hostile = [
        ("undecodable", valid[:10], header),
        ("undecodable", os.urandom(64), {}),
        ("undecodable", valid, {SCHEMA_HEADER: b"dev.other.Thing@0000"}),
        ("impossible_value", serialize({**template, "engine_rpm": math.inf}), header),
        ("validation_failed", serialize({**template, "speed_kmh": 900.0}), header),
        ("undecodable", None, header),
        # a valid record a thousand years ahead: the suite's plausibility window routes it, nothing crashes
        ("validation_failed", serialize({**template, "event_time": dt.datetime(3000, 1, 1, tzinfo=dt.timezone.utc)}),
         header),
        ("impossible_value", beyond_sql_timestamps(template), header),
        # a 900 KB payload: its dead letter keeps a sealed prefix, the size and the digest
        ("undecodable", valid + os.urandom(900_000), header),
    ]
    offset = len(raw)
    for i, (_, payload, headers) in enumerate(hostile):
        raw.append(RawRecord(b"VIN-BAD", payload, 0, 1000 + i, headers=headers))
    return raw, [stage for stage, _, _ in hostile], good + burst, offset


def beyond_sql_timestamps(record: dict) -> bytes:
    """A record whose event time (a raw Avro long) lies past the year 9999."""
    import fastavro

    schema = load_schema()
    raw = {**schema, "fields": [{**f, "type": "long"} if f["name"] == "event_time" else f for f in schema["fields"]]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(raw), {**record, "event_time": 2**62})
    return buf.getvalue()


def _check(outputs, plan, records, trained_model):
    raw, stages, readings, n_good = records
    scored, alerts, dlq = outputs
    out = plan.outputs
    # every record exactly once, and exactly the contract's fields
    seen = [(r["source_partition"], r["source_offset"]) for r in scored + dlq]
    assert sorted(seen) == sorted((r.partition, r.offset) for r in raw)
    assert all(list(r) == out.scored.names for r in scored)
    assert all(list(r) == out.dead_letters.names for r in dlq)
    assert all(list(r) == out.alerts.names for r in alerts)
    assert len(scored) == n_good
    # dead letters: the stage of each hostile record, its original bytes and offsets
    by_offset = {r["source_offset"]: r for r in dlq}
    for i, stage in enumerate(stages):
        letter = by_offset[1000 + i]
        original = raw[n_good + i].value
        assert letter["stage"] == stage and letter["reason"].startswith(stage)
        assert letter["source_topic"] == "raw.telemetry"
        assert letter["key_pseudonym"] == pseudonym(SECRET.encode(), "VIN-BAD")
        if original is None:
            assert letter["payload"] is None and letter["payload_bytes"] is None
            continue
        kept = open_payload(SECRET.encode(), bytes(letter["payload"]))
        assert kept == original[:PREFIX_BYTES] and letter["payload_bytes"] == len(original)
        assert letter["payload_sha256"] == hashlib.sha256(original).hexdigest()
        assert letter["payload_truncated"] == (len(original) > PREFIX_BYTES)
        assert bytes(letter["payload"]) != kept  # never in the clear
    # the scores the model gives in plain Python on the context the trainer builds (each vehicle's
    # readings in log order), pseudonyms with the secret, no raw id anywhere
    expected, flags, status = expected_scores(trained_model, readings, raw[:n_good])
    by_pos = {(r.partition, r.offset): i for i, r in enumerate(raw[:n_good])}
    got = np.empty(n_good)
    for r in scored:
        i = by_pos[(r["source_partition"], r["source_offset"])]
        got[i] = r["score"]
        assert r[out.entity] == pseudonym(SECRET.encode(), readings[i]["vehicle_id"])
        assert r["is_anomaly"] == flags[i] and r["partial"] == status.note[i]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert any("warming up" in (r["partial"] or "") for r in scored)
    assert not any("VIN-" in str(v) for r in scored + alerts for v in r.values())
    return scored, alerts, dlq


def expected_scores(trained_model, readings, raw):
    from udfs.anomaly_score import LoadedModel
    from udfs.feature_set import context_from_frame

    store, manifest = trained_model
    from connectors.model_registry import ModelRegistry

    registry = ModelRegistry(store)
    folder, _ = registry.fetch(registry.resolve(REF))
    model = LoadedModel(folder, manifest, "numpy")
    frame = pd.DataFrame(readings).assign(_partition=[r.partition for r in raw], _offset=[r.offset for r in raw])
    ctx = context_from_frame(frame, model.features.names, "vehicle_id", "event_time", ["_partition", "_offset"],
                             model.window)
    return model.score_context(ctx)


def _episodes(plan, scored, alerts):
    """HOT's alarm: one open and one closed event of one episode, as the rule gives on the scored flags."""
    from udfs.alert_rules import Reading, replay

    hot = pseudonym(SECRET.encode(), HOT)
    mine = sorted((r for r in scored if r[plan.outputs.entity] == hot), key=lambda r: r["source_offset"])
    expected = replay(plan.alarm, [r["is_anomaly"] for r in mine],
                      [Reading(r["event_time"], r["score"], r["source_partition"], r["source_offset"],
                               r["failure_label"], r["model_version"]) for r in mine], entity=hot)
    events = [a for a in alerts if a[plan.outputs.entity] == hot]
    assert [e["status"] for e in events] == ["open", "closed"] == [e["status"] for e in expected]
    opened, closed = events
    assert opened["episode_id"] == closed["episode_id"] == expected[0]["episode_id"]
    assert opened["ended_at"] is None and closed["ended_at"] is not None
    assert opened["anomalies"] == plan.alarm.enter and closed["anomalies"] >= len(BURST)
    assert closed["max_score"] == max(r["score"] for r in closed["readings"])
    assert opened["failure_label"] == "tire_leak"
    assert [e["source_offset"] for e in events] == [e["source_offset"] for e in expected]
    # no other vehicle alarms on normal driving
    assert all(a[plan.outputs.entity] == hot for a in alerts)
    return events


@pytest.mark.parametrize("decode", ["jvm", "python"])
def test_table_job_routes_every_raw_record_once(t_env, plan, records, trained_model, stack_settings, decode):
    from jobs.core import jvm_decode

    jar = str(jvm_decode.check_jar(jvm_decode.jar_path(stack_settings))) if decode == "jvm" else None
    tables = scoring.build(raw_table(t_env, records[0]), replace(plan, decode_jar=jar))
    scored, alerts, dlq = _check((collect(tables.scored), collect(tables.alerts), collect(tables.dead_letters)),
                                 plan, records, trained_model)
    _episodes(plan, scored, alerts)
    # derived features: the schema's SQL expressions
    r = scored[0]
    tires = [r[f"tire_pressure_{t}_kpa"] for t in ("fl", "fr", "rl", "rr")]
    assert r["tire_pressure_spread_kpa"] == pytest.approx(max(tires) - min(tires))


def test_stream_job_writes_the_same_records_and_episodes(t_env, plan, records, trained_model):
    tables = scoring_stream.build(raw_table(t_env, records[0]), plan)
    scored, alerts, dlq = _check((collect(tables.scored), collect(tables.alerts), collect(tables.dead_letters)),
                                 plan, records, trained_model)
    _episodes(plan, scored, alerts)


@pytest.mark.flink
def test_a_local_job_without_the_projects_config_runs_its_workers_with_this_interpreter(flink_activated, monkeypatch):
    """Without FLINK_CONF_DIR, Flink's default Python worker is "python" (here: an interpreter without
    PyFlink); the local environments take this process's interpreter instead, and a config's own
    python.executable stands."""
    import sys

    from pyflink.common import Types

    from jobs.core.flink_env import load_configuration, stream_environment

    assert load_configuration().get_string("python.executable", "") == os.environ.get("PYFLINK_CLIENT_EXECUTABLE")
    monkeypatch.delenv("FLINK_CONF_DIR")
    assert load_configuration().get_string("python.executable", "") == sys.executable
    assert load_configuration({"python.executable": "/opt/py/bin/python"}).get_string("python.executable", "") \
        == "/opt/py/bin/python"
    env = stream_environment(parallelism__default=1)
    out = env.from_collection([1, 2, 3], type_info=Types.INT()).map(lambda x: x * 2, output_type=Types.INT())
    assert sorted(out.execute_and_collect()) == [2, 4, 6]


QUIET = "veh-0001"   # a vehicle of the good readings, calibrated never to alarm


@pytest.fixture(scope="module")
def per_entity_plan(trained_model, plan, tmp_path_factory):
    """The session's model published again, calibrated per entity: HOT's own threshold is below
    every score, QUIET's above every score; the other vehicles have none (the fleet's applies)."""
    import shutil

    from connectors.model_registry import ModelRegistry
    from jobs.training.trainer import new_version

    store, manifest = trained_model
    source = ModelRegistry(store)
    folder, _ = source.fetch(source.resolve(REF))
    work = tmp_path_factory.mktemp("per-entity")
    shutil.copytree(folder, work / "model")
    own = {pseudonym(SECRET.encode(), HOT): -1.0, pseudonym(SECRET.encode(), QUIET): 1e12}
    calibrated = {k: v for k, v in manifest.items() if k not in ("artifact", "model_name", "number")}
    calibrated.update(version=new_version(), thresholds_by_entity=own,
                      threshold_rule={**manifest["threshold_rule"], "per": "entity"})
    per_store = tmp_path_factory.mktemp("models-per-entity")
    registry = ModelRegistry(str(per_store))
    published = registry.manifest(registry.publish("telemetry", work / "model", calibrated))
    settings = VigilSettings.load({"model.store": str(per_store), "pseudonym.secret_file": plan.secret_file,
                                   "tier": "none"})
    options = ScoreOptions(input_topic="raw.telemetry", model=REF, bounded=True)
    return assemble(settings, options, load_schema(), published, None, job="test-per-entity"), published


@pytest.mark.parametrize("job", [scoring, scoring_stream], ids=["table", "datastream"])
def test_both_jobs_flag_each_entity_against_its_own_threshold(t_env, per_entity_plan, records, trained_model, job):
    from connectors.model_registry import ModelRegistry
    from udfs.anomaly_score import LoadedModel
    from udfs.feature_set import context_from_frame

    plan, manifest = per_entity_plan
    raw, _, readings, n_good = records
    assert any(r["vehicle_id"] == QUIET for r in readings)
    scored = collect(job.build(raw_table(t_env, raw), plan).scored)
    registry = ModelRegistry(plan.model_store)
    folder, _ = registry.fetch(registry.resolve(REF))
    model = LoadedModel(folder, manifest, "numpy")
    frame = pd.DataFrame(readings).assign(_partition=[r.partition for r in raw[:n_good]],
                                          _offset=[r.offset for r in raw[:n_good]])
    ctx = context_from_frame(frame, model.features.names, "vehicle_id", "event_time", ["_partition", "_offset"],
                             model.window)
    entities = [pseudonym(SECRET.encode(), v) for v in frame["vehicle_id"]]
    _, own_flags, status = model.score_context(ctx, entities)
    _, fleet_flags, _ = model.score_context(ctx)
    by_pos = {(r.partition, r.offset): i for i, r in enumerate(raw[:n_good])}
    got = {}
    for r in scored:
        if (r["source_partition"], r["source_offset"]) in by_pos:
            got[by_pos[(r["source_partition"], r["source_offset"])]] = r["is_anomaly"]
    assert len(got) == n_good
    assert [got[i] for i in range(n_good)] == list(own_flags)
    hot = [i for i, v in enumerate(frame["vehicle_id"]) if v == HOT and not status.warming[i]]
    quiet = [i for i, v in enumerate(frame["vehicle_id"]) if v == QUIET]
    assert all(got[i] for i in hot) and not any(got[i] for i in quiet)
    # the fleet's threshold would flag neither so: HOT's normal readings pass it, QUIET's are others' too
    assert not all(fleet_flags[i] for i in hot)
    others = [i for i, v in enumerate(frame["vehicle_id"]) if v not in (HOT, QUIET)]
    assert [got[i] for i in others] == [fleet_flags[i] for i in others]
