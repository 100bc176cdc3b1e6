"""Every SQL block of docs/sql.md, run as written in `vigil sql` sessions on a real cluster and broker.

The blocks are read from the markdown, so the cookbook and this test cannot drift. Two things are
adapted, because each test has its own topics and the tests' broker may sit elsewhere: the topic
name ``telemetry`` where it names a table or topic (in back quotes or single quotes; the function
names such as ANOMALY_TELEMETRY stay, the test's registry has a model ``telemetry``), and the
broker address of section 7. The answers are checked against what the scoring job wrote to Kafka.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import numpy as np
import pytest

from connectors.kafka_io import create_topic, read_all
from connectors.records import outputs
from jobs import run_sql, sql_session
from tests.contract import read_checked
from tests.sql.fleet import Fleet, produce_fleet, unique_topic
from tests.sql.sql_output import Block, result_sets, sql_blocks
from tests.stack.cluster_fixture import flink_cluster  # noqa: F401 - the fixture
from udfs.preprocess import pseudonym
from vigil.settings import PROJECT_ROOT, read_pseudonym_secret

DOC = PROJECT_ROOT / "docs" / "sql.md"
CONTINUOUS = "7."  # the section whose INSERT runs on until it is cancelled
DOC_BROKER = "'127.0.0.1:9092'"


def adapt(sql: str, topic: str, bootstrap: str) -> str:
    sql = re.sub(r"([`'])telemetry(?=[.`'])", lambda m: m.group(1) + topic, sql)
    return sql.replace(DOC_BROKER, f"'{bootstrap}'")


def section(blocks: list[Block], number: str) -> list[Block]:
    return [b for b in blocks if b.section.startswith(number)]


@pytest.fixture(scope="module")
def scored(flink_cluster, point_models, kafka_bootstrap, tmp_path_factory):  # noqa: F811
    """A fleet's topic scored by the SQL job (bounded), its outputs read back, and the tier it wrote."""
    store, champion, challenger = point_models
    fleet = produce_fleet(kafka_bootstrap, unique_topic("cookbook"))
    tier = tmp_path_factory.mktemp("tier").as_uri()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VIGIL_FLINK_REST_PORT", str(flink_cluster.settings.flink.rest_port))
        code = run_sql.main(["--input", fleet.topic, "--model", "telemetry@champion", "--model-store", store,
                             "--bounded", "--wait",
                             "--bootstrap-servers", kafka_bootstrap, "--tier", tier,
                             "--group-id", f"g-{fleet.topic}"])
    assert code == 0
    out = outputs(fleet.schema)
    written = {name: read_checked(kafka_bootstrap, f"{fleet.topic}.{name}", contract)
               for name, contract in (("scored", out.scored), ("alerts", out.alerts), ("dlq", out.dead_letters))}
    assert len(written["scored"]) == len(fleet.records)
    assert len(written["dlq"]) == len(fleet.hostile)
    assert written["alerts"], "the fleet's failures raised no alert: the join of section 6 would prove nothing"
    return fleet, written, tier, store, champion, challenger


def run_blocks(cluster, blocks: list[Block], fleet: Fleet, bootstrap: str, store: str, tier: str, tmp: Path,
               *extra: str) -> tuple[int, str, str]:
    script = tmp / "cookbook.sql"
    script.write_text("\n\n".join(adapt(b.sql, fleet.topic, bootstrap) for b in blocks) + "\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VIGIL_FLINK_REST_PORT", str(cluster.settings.flink.rest_port))
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = sql_session.main(["--file", str(script), "--topic", fleet.topic, "--model-store", store,
                                     "--tier", tier, "--bootstrap-servers", bootstrap, *extra])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.flink
@pytest.mark.kafka
def test_every_cookbook_query_answers_from_the_topics_outputs(scored, flink_cluster, kafka_bootstrap,  # noqa: F811
                                                              tmp_path):
    fleet, written, tier, store, champion, challenger = scored
    blocks = [b for b in sql_blocks(DOC) if not b.section.startswith(CONTINUOUS)]
    assert len(blocks) >= 10, [b.section for b in blocks]
    code, out, err = run_blocks(flink_cluster, blocks, fleet, kafka_bootstrap, store, tier, tmp_path, "--bounded")
    assert code == 0, err
    sets = result_sets(out)
    assert len(sets) == sum(b.results for b in blocks), out[-3000:]
    by_block = {}
    for block in blocks:
        by_block[block.sql], sets = sets[:block.results], sets[block.results:]

    def results(number: str) -> list[list[dict]]:
        return [r for b in section(blocks, number) for r in by_block[b.sql]]

    n = len(fleet.records)
    anomalies = sum(bool(r["is_anomaly"]) for r in written["scored"])
    topic = fleet.topic
    features = champion["features"]["names"]

    # 1. look around
    tables, models, describe, sample = results("1.")
    names = {r["table name"] for r in tables}
    assert {topic, f"{topic}.scored", f"{topic}.alerts", f"{topic}.dlq", f"{topic}.tier", "model_functions"} <= names
    assert {(r["function"], r["model"], r["version"]) for r in models} == {
        ("ANOMALY_TELEMETRY", "telemetry@champion", "telemetry@1"),
        ("ANOMALY_TELEMETRY_CHALLENGER", "telemetry@challenger", "telemetry@2")}
    signature = next(r["info value"] for r in describe if r["info name"] == "signature")
    assert signature.endswith("ANOMALY_TELEMETRY(" + ", ".join(f"{f} => DOUBLE" for f in features) + ")")
    assert len(sample) == 9 and all(r["vehicle_id_pseudonym"].startswith("p-") for r in sample)
    assert not any("veh-" in str(v) for r in sample for v in r.values())  # raw ids never show

    # 2. unusable records, by stage: exactly the hostile ones
    (stages,) = results("2.")
    assert {r["stage"]: int(r["records"]) for r in stages} == fleet.stages

    # 3. ad-hoc scoring with the champion; then champion and challenger in one query
    by_view, adhoc, side_by_side, by_ref = results("3.")
    assert len(adhoc) == n and {r["model_version"] for r in adhoc} == {"telemetry@1"}
    # the model's view of the topic: the same rows and scores as the call written out (float32
    # scoring: batches of other sizes round the last digits differently, udfs/autoencoder: 1e-5)
    view_scores = {(r["vehicle_id_pseudonym"], r["event_time"]): float(r["score"]) for r in by_view}
    assert len(view_scores) == len(by_view) == n and set(view_scores) == {
        (r["vehicle_id_pseudonym"], r["event_time"]) for r in adhoc}
    np.testing.assert_allclose([view_scores[(r["vehicle_id_pseudonym"], r["event_time"])] for r in adhoc],
                               [float(r["score"]) for r in adhoc], rtol=1e-5)
    threshold = float(champion["threshold"])
    assert all((r["is_anomaly"] == "TRUE") == (float(r["score"]) > threshold) for r in adhoc)
    # the same scores as the scoring job computed with the same model version
    job = {(o["vehicle_id_pseudonym"], dt.datetime.fromisoformat(o["event_time"])): o["score"]
           for o in written["scored"]}
    np.testing.assert_allclose([float(r["score"]) for r in adhoc],
                               [job[(r["vehicle_id_pseudonym"], dt.datetime.fromisoformat(r["event_time"]))]
                                for r in adhoc], rtol=1e-5)
    assert len(side_by_side) == n
    assert {(r["champion"], r["challenger"]) for r in side_by_side} == {("telemetry@1", "telemetry@2")}
    assert sum(r["champion_score"] != r["challenger_score"] for r in side_by_side) > n // 2
    # ANOMALY('telemetry@challenger', ...): the challenger's scores
    challenger_scores = {(r["vehicle_id_pseudonym"], r["event_time"]): r["challenger_score"] for r in side_by_side}
    assert len(by_ref) == n and {r["model_version"] for r in by_ref} == {"telemetry@2"}
    assert all(r["score"] == challenger_scores[(r["vehicle_id_pseudonym"], r["event_time"])] for r in by_ref)

    # 5. windows: every scored reading in one tumbling window, and in four hopping ones
    tumble, hop = results("5.")
    assert sum(int(r["readings"]) for r in tumble) == n
    assert sum(int(r["anomalies"]) for r in tumble) == anomalies
    assert len({r["vehicle_id_pseudonym"] for r in tumble}) == 10
    assert sum(int(r["readings"]) for r in hop) == 4 * n
    assert sum(int(r["anomalies"]) for r in hop) == 4 * anomalies

    # 6. alerts joined with the reference table through PSEUDONYM
    (joined,) = results("6.")
    secret = read_pseudonym_secret(flink_cluster.settings.pseudonym.secret_file)
    depot = {pseudonym(secret, f"veh-000{i}"): d for i, d in enumerate(
        ["Depot North", "Depot North", "Depot South", "Depot South", "Depot East"], start=1)}
    expected = sorted(depot[a["vehicle_id_pseudonym"]] for a in written["alerts"] if a["vehicle_id_pseudonym"] in depot)
    assert sorted(r["depot"] for r in joined) == expected

    # 8. the Parquet tier the SQL job wrote, in batch mode
    (tier_rows,) = results("8.")
    assert sum(int(r["readings"]) for r in tier_rows) == n
    assert sum(int(r["anomalies"]) for r in tier_rows) == anomalies


@pytest.mark.flink
@pytest.mark.kafka
def test_cookbook_continuous_insert_writes_each_closed_window_once(scored, flink_cluster, kafka_bootstrap,  # noqa: F811
                                                                    tmp_path):
    fleet, written, tier, store, _, _ = scored
    blocks = section(sql_blocks(DOC), CONTINUOUS)
    assert [b.results for b in blocks] == [0, 0]
    sink = f"{fleet.topic}.anomalies-per-minute"
    create_topic(kafka_bootstrap, sink, partitions=1)  # the doc's `vigil topics create`
    code, out, err = run_blocks(flink_cluster, blocks, fleet, kafka_bootstrap, store, tier, tmp_path)
    assert code == 0, err
    (job_id,) = re.findall(r"submitted job ([0-9a-f]{32})", out)
    try:
        # The readings span two full minutes and part of a third: the watermark (event time - 5 s)
        # closes the first two; the last stays open while the job runs on.
        deadline = time.monotonic() + 180
        got: list = []
        while time.monotonic() < deadline and len(got) < 20:
            got = [m for m in read_all(kafka_bootstrap, sink, timeout=5)]
            time.sleep(2)
        assert flink_cluster.job(job_id)["state"] == "RUNNING"
    finally:
        flink_cluster.cancel(job_id)
        flink_cluster.wait_for_job(job_id, timeout=60)
    import json

    rows = [json.loads(m.value()) for m in got]
    expected: dict[tuple[str, str], int] = {}
    for o in written["scored"]:
        minute = o["event_time"][:16]
        expected[(o["vehicle_id_pseudonym"], minute)] = expected.get((o["vehicle_id_pseudonym"], minute), 0) + 1
    windows = {(r["vehicle_id_pseudonym"], r["window_start"][:16]): r["readings"] for r in rows}
    assert len(windows) == len(rows) == 20  # 10 vehicles x 2 closed minutes, each written once
    assert all(expected[k] == v for k, v in windows.items())
    assert {m.key().decode() for m in got} == {r["vehicle_id_pseudonym"] for r in rows}
