"""jobs.replay: which column is the entity (any machine's id names), and the roles a replay prints."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors import schema_store
from connectors.avro_serde import AvroDeserializer, feature_columns
from connectors.kafka_io import read_all
from jobs.replay.roles import entity_rank, looks_like_entity, looks_like_label, looks_like_time, pick_entity
from jobs.replay_file import ReplaySettings, ReplaySource, main

NOWHERE = "127.0.0.1:1"  # a dry run never contacts Kafka
T0_MS = 1_700_000_000_000


def _lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines()]


# --- names (pure) --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "car", "truck", "vin", "pump", "line", "host", "node", "Car", "VIN", "car_id", "truck_id", "truckNo",
    "vin_number", "pump_name", "line_key", "hostID", "hostId", "carID", "machineID", "node_nr", "hostname",
    "vehicle_id", "machine id", "unit_number", "sensor_id", "id", "customer_id", "orderId", "plant_line_id",
])
def test_machine_and_id_names_look_like_entities(name: str) -> None:
    assert looks_like_entity(name), name


@pytest.mark.parametrize("name", [
    "speed", "temperature", "paid", "uuid", "identity", "sensor", "carbon", "liner", "hosts_total", "ts",
    "line_voltage", "idle", "truckload", "node_count",
])
def test_other_names_do_not(name: str) -> None:
    assert not looks_like_entity(name), name


def test_entity_precedence_machine_ids_then_machine_nouns_then_any_x_id() -> None:
    assert [entity_rank(n) for n in ("id", "vehicle_id", "hostID", "car", "line", "customer_id", "speed")] == \
        [0, 0, 0, 1, 1, 2, None]
    assert pick_entity(["customer_id", "vehicle_id"]) == ("vehicle_id", "its name; also looked like one: customer_id")
    assert pick_entity(["customer_id", "id"])[0] == "id"
    assert pick_entity(["line", "machine_id"])[0] == "machine_id"
    assert pick_entity(["id", "vehicle_id"])[0] == "id"  # one rank: the first in file order
    assert pick_entity(["order_id", "speed"]) == ("order_id", "its name ends in id")
    assert pick_entity(["speed", "car"], exclude={"car"}) == (None, "no column looks like one")


def test_role_name_functions_are_public_with_one_signature() -> None:
    for fn in (looks_like_entity, looks_like_label, looks_like_time):
        sig = inspect.signature(fn)
        assert list(sig.parameters) == ["name"] and sig.return_annotation in (bool, "bool"), fn.__name__
    assert looks_like_time("event_time_ms") and looks_like_time("Timestamp") and not looks_like_time("speed")
    assert looks_like_label("failure_type") and not looks_like_label("car")


# --- what a replay prints ------------------------------------------------------------------------

def _car_csv(path: Path, id_column: str = "car", extra: str = "") -> Path:
    rows = [f"C-{i % 3:02d},{T0_MS + i * 1000},{50 + i}.5,{2000 + i},{80 + i % 5},{'ok' if i % 2 else 'check oil'}"
            f"{extra and ',' + str(900 + i)}" for i in range(30)]
    header = f"{id_column},ts,speed_kmh,rpm,coolant_temp_c,comment{extra and ',' + extra}"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.kafka
def test_connected_car_csv_keyed_by_its_car_column(kafka_bootstrap: str, new_topic: Callable[..., str],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _car_csv(tmp_path / "cars.csv")
    topic = new_topic("cars")

    assert main([str(path), "--topic", topic, "--bootstrap-servers", kafka_bootstrap]) == 0
    out = _lines(capsys.readouterr().out)
    assert out[:7] == [
        "columns of cars.csv:",
        "time: ts (its name; epoch milliseconds by magnitude)",
        "entity: car (its name)",
        "label: none (no column looks like one)",
        "features: speed_kmh, rpm, coolant_temp_c (numeric)",
        "dropped: comment (text, not numeric, e.g. 'check oil')",
        f"wrote 30 rows to topic {topic!r}; feature columns: speed_kmh, rpm, coolant_temp_c; schema id: "
        + out[6].rsplit("schema id: ", 1)[1],
    ]

    schema = schema_store.require(kafka_bootstrap, topic)
    assert schema["vigil.entity"] == "car" and schema["vigil.time"] == "ts"
    assert feature_columns(schema) == ["speed_kmh", "rpm", "coolant_temp_c"]
    decode = AvroDeserializer(schema)
    got = [(m.key().decode(), decode(m.value())) for m in read_all(kafka_bootstrap, topic)]
    assert len(got) == 30 and all(key == rec["car"] for key, rec in got)
    assert {key for key, _ in got} == {"C-00", "C-01", "C-02"}


@pytest.mark.parametrize("id_column", ["truck_id", "hostID"])
def test_truck_and_host_ids_are_the_entity_in_a_dry_run(id_column: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _car_csv(tmp_path / f"{id_column}.csv", id_column, extra="customer_id")

    assert main([str(path), "--topic", "fleet", "--dry-run", "--bootstrap-servers", NOWHERE]) == 0
    out = _lines(capsys.readouterr().out)
    assert f"entity: {id_column} (its name; also looked like one: customer_id)" in out
    assert "dropped: customer_id (its name looks like an id, not a measurement; --columns keeps it)" in out
    assert "features: speed_kmh, rpm, coolant_temp_c (numeric)" in out
    assert out[-1].startswith("checked 30 rows of") and out[-1].endswith("nothing written (dry run)")
    assert ReplaySource.open(ReplaySettings(path=path, topic="fleet", bootstrap_servers=NOWHERE)).schema[
        "vigil.entity"] == id_column


def test_named_roles_no_entity_and_a_label_are_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "press.csv"
    path.write_text("when,reading_time,force_kn,fault\n2024-01-01T00:00:00,2024-01-01T00:00:00,1.5,none\n")
    assert main([str(path), "--topic", "p", "--dry-run", "--bootstrap-servers", NOWHERE]) == 0
    out = _lines(capsys.readouterr().out)
    assert out[1:5] == [
        "time: reading_time (its name; ISO 8601 text)",
        "entity: none (no column looks like one; every row gets entity_id 'press')",
        "label: fault (its name)",
        "features: force_kn (numeric)",
    ]
    assert "dropped: when (text, not numeric, e.g. '2024-01-01T00:00:00')" in out

    assert main([str(path), "--topic", "p", "--dry-run", "--bootstrap-servers", NOWHERE, "--time-column", "when",
                 "--columns", "force_kn"]) == 0
    out = _lines(capsys.readouterr().out)
    assert "time: when (--time-column; ISO 8601 text)" in out
    assert "features: force_kn (named in --columns)" in out
    assert "dropped: reading_time (not named in --columns)" in out
