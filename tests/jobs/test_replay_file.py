"""jobs.replay_file: schema derivation, bad input, pacing (pure) and replays into the real local Kafka."""
from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors import schema_store
from connectors.avro_serde import AvroDeserializer, feature_columns
from connectors.kafka_io import read_all
from connectors.kafka_io import describe_topic
from jobs.replay_file import (
    CONSTANT_ENTITY_FIELD,
    Pacer,
    ReplayError,
    ReplaySettings,
    ReplaySource,
    avro_name,
    derive_schema,
    main,
    read_rows,
    replay,
)

NOWHERE = "127.0.0.1:1"  # no broker: anything that reaches Kafka would fail with exit code 1
T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def _settings(path: Path, **kw: Any) -> ReplaySettings:
    return ReplaySettings(path=path, topic=kw.pop("topic", "replay.unit"), bootstrap_servers=kw.pop(
        "bootstrap_servers", NOWHERE), **kw)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


# --- schema derivation ---------------------------------------------------------------------------

def test_csv_schema_sniffs_semicolons_and_assigns_roles(tmp_path: Path) -> None:
    path = tmp_path / "press line.csv"
    path.write_text(
        "Timestamp;machine id;temp °C;vibration;status;2nd axis;is_anomaly\n"
        "2024-03-01T10:00:00;007;71.5;0.25;ok;3;\n"
        "2024-03-01T10:00:01;008;;0.5;ok;4;bearing\n"
        "2024-03-01T10:00:02Z;007;72.0;0.75;warn;5;\n",
        encoding="utf-8",
    )
    settings = _settings(path, topic="plant-a.line-1")
    source = ReplaySource.open(settings)
    schema = source.schema

    assert source.sep == ";"
    assert schema["name"] == "plant_a_line_1" and schema["namespace"] == "dev.vigil.replay"
    assert (schema["vigil.entity"], schema["vigil.time"], schema["vigil.label"]) == ("machine_id", "Timestamp", "is_anomaly")
    assert schema["vigil.source"] == "press line.csv"
    assert feature_columns(schema) == ["temp__C", "vibration", "_2nd_axis"]
    assert [f["name"] for f in schema["fields"]] == ["machine_id", "Timestamp", "temp__C", "vibration", "_2nd_axis",
                                                      "is_anomaly"]
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert types["machine_id"] == "string"
    assert types["Timestamp"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert types["vibration"] == ["null", "double"] and types["is_anomaly"] == ["null", "string"]
    assert source.plan.left_out == (("status", "string, e.g. 'ok'"),)

    _, records = read_rows(settings)
    rows = list(records)
    base = int(pd.Timestamp("2024-03-01T10:00:00Z").value // 1_000_000)
    assert rows == [
        {"machine_id": "007", "Timestamp": base, "temp__C": 71.5, "vibration": 0.25, "_2nd_axis": 3.0, "is_anomaly": None},
        {"machine_id": "008", "Timestamp": base + 1000, "temp__C": None, "vibration": 0.5, "_2nd_axis": 4.0,
         "is_anomaly": "bearing"},
        {"machine_id": "007", "Timestamp": base + 2000, "temp__C": 72.0, "vibration": 0.75, "_2nd_axis": 5.0,
         "is_anomaly": None},
    ]


def test_parquet_schema_from_arrow_schema_and_from_data(tmp_path: Path) -> None:
    path = tmp_path / "pump-7.parquet"
    table = pa.table({
        "reading_time": pa.array([T0_MS, T0_MS + 500], pa.timestamp("ms", tz="UTC")),
        "flow": pa.array([1.5, None], pa.float64()),
        "rpm": pa.array([1200, 1300], pa.int32()),
        "operator": pa.array(["ann", "bob"]),
        "valve_open": pa.array([True, False]),
    })
    pq.write_table(table, path)
    settings = _settings(path)

    from_arrow = derive_schema(pq.read_schema(path), settings)
    from_data = derive_schema(table.to_pandas(), settings)
    assert from_arrow == from_data
    assert feature_columns(from_arrow) == ["flow", "rpm", "valve_open"]
    assert from_arrow["vigil.entity"] == CONSTANT_ENTITY_FIELD and "vigil.label" not in from_arrow
    assert from_arrow["vigil.time"] == "reading_time" and from_arrow["vigil.source"] == "pump-7.parquet"

    schema, records = read_rows(settings)
    assert schema == from_arrow
    assert list(records) == [
        {"entity_id": "pump-7", "reading_time": T0_MS, "flow": 1.5, "rpm": 1200.0, "valve_open": 1.0},
        {"entity_id": "pump-7", "reading_time": T0_MS + 500, "flow": None, "rpm": 1300.0, "valve_open": 0.0},
    ]


def test_epoch_seconds_and_millis_columns_become_millis(tmp_path: Path) -> None:
    for name, values in (("secs.csv", ["1700000000", "1700000001.5"]), ("millis.csv", ["1700000000000", "1700000001500"])):
        path = tmp_path / name
        path.write_text("ts,x\n" + "".join(f"{v},{i}\n" for i, v in enumerate(values)))
        _, records = read_rows(_settings(path))
        assert [r["ts"] for r in records] == [T0_MS, T0_MS + 1500], name


def test_columns_option_limits_features_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("time,a,b,c\n2024-01-01T00:00:00,1,2,3\n")
    assert feature_columns(read_rows(_settings(path, columns=("c", "a")))[0]) == ["a", "c"]
    with pytest.raises(ReplayError, match=r"'zz'.*available: 'time', 'a', 'b', 'c'"):
        ReplaySource.open(_settings(path, columns=("a", "zz")))


def test_labels_that_mean_normal_become_null(tmp_path: Path) -> None:
    path = tmp_path / "pump.csv"
    path.write_text("time,flow,anomaly\n2024-01-01T00:00:00,1.5,0\n2024-01-01T00:00:01,1.6,1\n"
                    "2024-01-01T00:00:02,1.4,Normal\n2024-01-01T00:00:03,1.7,bearing\n")
    _, records = read_rows(_settings(path))
    assert [r["anomaly"] for r in records] == [None, "1", None, "bearing"]
    _, records = read_rows(_settings(path, normal_labels=("normal",)))
    assert [r["anomaly"] for r in records] == ["0", "1", None, "bearing"]


def test_column_names_that_collide_after_sanitising_are_rejected(tmp_path: Path) -> None:
    assert avro_name("temp °C") == "temp__C" and avro_name("1st") == "_1st" and avro_name("température") == "temperature"
    path = tmp_path / "c.csv"
    path.write_text("time,flow rate,flow_rate\n2024-01-01T00:00:00,1,2\n")
    with pytest.raises(ReplayError, match=r"'flow_rate'.*'flow rate'.*Avro field name 'flow_rate'"):
        ReplaySource.open(_settings(path))


# --- bad input -----------------------------------------------------------------------------------

def _bad_files(tmp: Path) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (path, extra args, regex the message must match)."""
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "header.csv").write_text("time,temp,pressure\n")
    (tmp / "text.csv").write_text("time,machine,status\n2024-01-01T00:00:00,m1,ok\n")
    (tmp / "badtime.csv").write_text(
        "time,temp\n2024-01-01T00:00:00,1\n2024-01-01T00:00:01,2\nyesterday noon,3\n")
    (tmp / "good.csv").write_text("time,temp\n2024-01-01T00:00:00,1\n")
    pq.write_table(pa.table({"time": pa.array([], pa.timestamp("ms")), "x": pa.array([], pa.float64())}),
                   tmp / "empty.parquet")
    return {
        "empty file": (tmp / "empty.csv", [], r"empty \(0 bytes\)"),
        "header only": (tmp / "header.csv", [], r"header but no data rows"),
        "no rows parquet": (tmp / "empty.parquet", [], r"has no rows"),
        "no numeric columns": (tmp / "text.csv", [], r"no numeric feature columns"),
        "unparsable timestamp": (tmp / "badtime.csv", [], r"row 3: cannot parse 'yesterday noon' in the time column 'time'"),
        "missing column": (tmp / "good.csv", ["--time-column", "when"],
                           r"--time-column 'when' is not a column of good.csv; available: 'time', 'temp'"),
        "nonexistent path": (tmp / "nope.csv", [], r"no such file: .*nope.csv"),
    }


@pytest.mark.parametrize("case", ["empty file", "header only", "no rows parquet", "no numeric columns",
                                  "unparsable timestamp", "missing column", "nonexistent path"])
def test_bad_files_fail_before_contacting_kafka(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, extra, pattern = _bad_files(tmp_path)[case]
    rc = main([str(path), "--topic", "replay.bad", "--bootstrap-servers", NOWHERE, *extra])
    err = capsys.readouterr().err
    assert rc == 2, err  # 1 would mean it got as far as the (absent) broker
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(pattern, err), err
    assert "nothing was written" in err
    if not extra:
        with pytest.raises(ReplayError, match=pattern):
            ReplaySource.open(_settings(path))


def test_bad_options_are_reported_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.data"
    path.write_text("time,temp\n2024-01-01T00:00:00,1\n")
    assert main([str(path), "--topic", "t"]) == 2
    assert "pass --format csv or --format parquet" in capsys.readouterr().err
    assert main([str(path), "--topic", "t", "--format", "csv", "--speed", "-1"]) == 2
    assert "speed must be a finite number >= 0, got -1.0" in capsys.readouterr().err
    assert main([str(path), "--topic", "bad topic!", "--format", "csv"]) == 2
    assert "invalid topic name 'bad topic!'" in capsys.readouterr().err


# --- pacing --------------------------------------------------------------------------------------

def test_pacer_follows_the_file_rhythm_scaled_and_bounded() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(round(s, 6))
        now[0] += s

    pacer = Pacer(speed=10, max_sleep_s=2.0, clock=lambda: now[0], sleep=sleep)
    for ms in (0, 1000, 3000, 2500, 3500, 603_500):  # 1 s, 2 s, backwards, 0.5 s past the high mark, 10 min
        pacer.wait(ms)
    assert slept == [0.1, 0.2, 0.05, 2.0]
    unpaced = Pacer(speed=0, sleep=sleep)
    unpaced.wait(0), unpaced.wait(10_000)
    assert len(slept) == 4


# --- against the real local Kafka ----------------------------------------------------------------

def _fleet_frame(n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    # Three machines interleaved unevenly, event times not sorted within the file (jitter).
    machines = rng.choice(["m-01", "m-02", "0033"], size=n, p=[0.5, 0.3, 0.2])
    times = T0_MS + np.arange(n) * 1000 + rng.integers(-1500, 1500, size=n)
    temp = rng.normal(70, 5, size=n).round(3)
    temp[rng.random(n) < 0.1] = np.nan
    vib = rng.normal(0.5, 0.1, size=n)
    labels = np.where(rng.random(n) < 0.05, "bearing", None)
    return pd.DataFrame({"event_time_ms": times, "device_id": machines, "temp_c": temp, "vib_rms": vib,
                         "failure_type": labels})


def _read_back(bootstrap: str, topic: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any], int]]]:
    """(stored schema, [(key, record, kafka timestamp ms)]) in (partition, offset) order."""
    schema = schema_store.lookup(bootstrap, topic)
    assert schema is not None, f"no schema registered for {topic}"
    decode = AvroDeserializer(schema)
    msgs = sorted(read_all(bootstrap, topic), key=lambda m: (m.partition(), m.offset()))
    return schema, [(m.key().decode(), decode(m.value()), m.timestamp()[1]) for m in msgs]


def _assert_round_trip(frame: pd.DataFrame, entity: str, time_ms: list[int], got: list[tuple[str, dict, int]],
                       schema: dict[str, Any]) -> None:
    assert len(got) == len(frame)
    time_field = schema["vigil.time"]
    expected: dict[str, list[tuple[int, float | None, float | None, str | None]]] = defaultdict(list)
    for i, row in enumerate(frame.itertuples(index=False)):
        expected[str(getattr(row, entity))].append((
            time_ms[i],
            None if math.isnan(row.temp_c) else row.temp_c,
            None if math.isnan(row.vib_rms) else row.vib_rms,
            row.failure_type if isinstance(row.failure_type, str) else None,
        ))
    actual: dict[str, list[tuple[int, float | None, float | None, str | None]]] = defaultdict(list)
    for key, rec, kafka_ts in got:
        ms = int(rec[time_field].timestamp() * 1000 + 0.5)
        assert kafka_ts == ms
        assert rec[schema["vigil.entity"]] == key
        actual[key].append((ms, rec["temp_c"], rec["vib_rms"], rec["failure_type"]))
    assert set(actual) == set(expected)
    for key in expected:  # per entity: the file's order and values, NaN as None
        assert actual[key] == expected[key], key


@pytest.mark.kafka
def test_csv_replay_round_trip(kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    frame = _fleet_frame()
    path = tmp_path / "fleet.csv"
    csv_frame = frame.assign(event_time=[_iso(int(t)) for t in frame.event_time_ms]).drop(columns="event_time_ms")
    csv_frame[["event_time", "device_id", "temp_c", "vib_rms", "failure_type"]].to_csv(path, index=False)
    topic = new_topic("csv")

    rc = main([str(path), "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--chunk-size", "128"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"wrote 500 rows to topic {topic!r}; feature columns: temp_c, vib_rms; schema id: dev.vigil.replay." in out

    schema, got = _read_back(kafka_bootstrap, topic)
    assert feature_columns(schema) == ["temp_c", "vib_rms"]
    assert (schema["vigil.entity"], schema["vigil.label"]) == ("device_id", "failure_type")
    _assert_round_trip(frame, "device_id", frame.event_time_ms.tolist(), got, schema)


@pytest.mark.kafka
def test_parquet_replay_round_trip(kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path) -> None:
    frame = _fleet_frame()
    path = tmp_path / "fleet.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=200)
    topic = new_topic("parquet")

    result = replay(ReplaySettings(path=path, topic=topic, bootstrap_servers=kafka_bootstrap, chunk_size=64),
                    progress=False)
    assert result.rows == 500 and result.feature_columns == ["temp_c", "vib_rms"]
    assert sum(b - a + 1 for a, b in result.offsets.values()) == 500

    schema, got = _read_back(kafka_bootstrap, topic)
    assert schema["vigil.time"] == "event_time_ms"
    _assert_round_trip(frame, "device_id", frame.event_time_ms.tolist(), got, schema)


@pytest.mark.kafka
def test_bad_row_after_the_first_chunk_reports_what_was_written(
        kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    lines = [f"{_iso(T0_MS + i * 1000)},m{i % 3},{i}" for i in range(500)]
    lines[350] = "not-a-time,m2,350"  # data row 351, in the fourth chunk of 100
    path = tmp_path / "late.csv"
    path.write_text("time,machine,value\n" + "\n".join(lines) + "\n")
    topic = new_topic("late")

    rc = main([str(path), "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--chunk-size", "100"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "row 351: cannot parse 'not-a-time'" in err
    assert f"300 records were already written to topic {topic!r} (partition " in err
    assert describe_topic(kafka_bootstrap, topic).messages == 300


@pytest.mark.kafka
def test_speed_paces_by_the_file_gaps(kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path) -> None:
    path = tmp_path / "paced.csv"
    path.write_text("time,x\n" + "".join(f"{_iso(T0_MS + i * 200)},{i}\n" for i in range(5)))

    def run(speed: float) -> float:
        settings = ReplaySettings(path=path, topic=new_topic(f"speed{speed:g}"), bootstrap_servers=kafka_bootstrap,
                                  speed=speed)
        result = replay(settings, progress=False)
        assert result.rows == 5
        return result.produce_seconds

    assert run(1.0) >= 0.7  # four gaps of 0.2 s
    assert run(0) < 0.3


@pytest.mark.kafka
def test_a_topic_holding_another_schema_is_refused(kafka_bootstrap: str, new_topic: Callable[..., str],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("time,x\n2024-01-01T00:00:00,1\n")
    second.write_text("time,y,z\n2024-01-01T00:00:00,1,2\n")
    topic = new_topic("mixed")
    assert main([str(first), "--topic", topic, "--bootstrap-servers", kafka_bootstrap]) == 0
    assert main([str(second), "--topic", topic, "--bootstrap-servers", kafka_bootstrap]) == 2
    assert f"topic {topic!r} already holds 1 records written with schema" in capsys.readouterr().err
    assert describe_topic(kafka_bootstrap, topic).messages == 1


def test_no_broker_gives_exit_1_naming_the_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.csv"
    path.write_text("time,temp\n2024-01-01T00:00:00,1\n")
    rc = main([str(path), "--topic", "replay.nobroker", "--bootstrap-servers", NOWHERE, "--broker-timeout", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: ") and NOWHERE in err and "nothing was written" in err
