"""vigil retrain on the real broker: the loop promotes a challenger trained on the recalibrated fleet
over a champion that no longer fits, refuses one trained on a recalibration that has since ended, and
the registry's history and the model-events topic record both decisions with their figures."""
from __future__ import annotations

import json
import time

import pytest

from connectors.kafka_io import read_all
from connectors.model_registry import ModelRegistry
from jobs import retrain
from jobs.simulation import RECALIBRATION
from tests.jobs.monitoring_data import STEADY, produce, segment

pytestmark = pytest.mark.kafka

# the simulator's recalibration, which the autoencoder sees at once: tires 40 kPa high, the vertical
# accelerometer 0.3 g
STRONG = RECALIBRATION
# small, quick models that read each vehicle's last 2 readings (40 s: a change of the data shows in few windows)
TRAIN = ["--epochs", "15", "--members", "1", "--patience", "3", "--window", "2", "--quiet",
         "--drift-features", ",".join(STEADY)]


def cycle(bootstrap: str, store: str, topic: str, model: str, hours: float, capsys, *flags: str) -> tuple[dict, str]:
    started = time.monotonic()
    assert retrain.main(["--topic", topic, "--model-name", model, "--once", "--last-hours", str(hours),
                         "--bootstrap-servers", bootstrap, "--model-store", store, *TRAIN, *flags]) == 0
    out = capsys.readouterr().out
    print(out, f"cycle: {time.monotonic() - started:.1f} s")
    events = [json.loads(m.value()) for m in read_all(bootstrap, f"{topic}.model-events")]
    return [e for e in events if e["model"] == model][-1], out


def test_the_loop_promotes_a_better_challenger_and_refuses_a_worse_one(kafka_bootstrap, new_topic, tmp_path,
                                                                        capsys):
    topic, store = new_topic("fleet"), str(tmp_path / "models")
    produce(kafka_bootstrap, topic, segment(0, 10))                        # minutes 0-10: the fleet as it was
    for model in ("promote", "refuse"):                                    # first cycle: the first version is champion
        first, _ = cycle(kafka_bootstrap, store, topic, model, 10 / 60, capsys)
        assert first["decision"] == "first" and first["champion"] == f"{model}@1"
    produce(kafka_bootstrap, topic, segment(10, 10, shift=STRONG))        # minutes 10-20: gauges recalibrated

    # the last 9 minutes are all recalibrated: the challenger learns them, the champion flags them
    promoted, out = cycle(kafka_bootstrap, store, topic, "promote", 9 / 60, capsys)
    champion, challenger = promoted["champion"], promoted["challenger"]
    figures = promoted["figures"]
    print("promote: champion", {k: figures["champion"].get(k) for k in ("false_alarm_rate", "precision", "recall",
                                                                         "max_psi")},
          "challenger", {k: figures["challenger"].get(k) for k in ("false_alarm_rate", "precision", "recall",
                                                                    "max_psi")})
    assert promoted["decision"] == "promoted" and champion == challenger == "promote@2", promoted["checks"]
    assert figures["champion"]["max_psi"] > 0.2 > figures["challenger"]["max_psi"]
    assert figures["challenger"]["false_alarm_rate"] < figures["champion"]["false_alarm_rate"]
    assert promoted["holdout_rows"] >= 100 and promoted["window"]["holdout_from"] > promoted["window"]["from"]
    assert "4/4 promoted promote@2 over promote@1" in out
    registry = ModelRegistry(store)
    state = registry.state("promote")
    assert state.aliases["champion"] == 2
    move = state.history[-1]
    assert (move["action"], move["alias"], move["version"], move["previous"]) == ("alias", "champion", 2, 1)
    assert move["reason"].startswith("retrain: promoted") and move["by"] and move["at"]
    assert move["figures"]["figures"]["challenger"]["false_alarm_rate"] == figures["challenger"]["false_alarm_rate"]

    # the recalibration is undone (minutes 20-23 normal again); a window of 12 minutes whose newest quarter is
    # held out: the challenger learns minutes 11-20 (recalibrated, gone now), the champion still fits
    produce(kafka_bootstrap, topic, segment(20, 3))
    refused, out = cycle(kafka_bootstrap, store, topic, "refuse", 12 / 60, capsys, "--holdout-fraction", "0.25")
    figures = refused["figures"]
    print("refuse: champion", {k: figures["champion"].get(k) for k in ("false_alarm_rate", "precision", "recall",
                                                                        "max_psi")},
          "challenger", {k: figures["challenger"].get(k) for k in ("false_alarm_rate", "precision", "recall",
                                                                    "max_psi")})
    assert refused["decision"] == "refused" and refused["champion"] == "refuse@1", refused["checks"]
    assert refused["challenger"] == "refuse@2"
    failed = {c["check"] for c in refused["checks"] if not c["ok"]}
    assert "drift" in failed and figures["challenger"]["max_psi"] > 0.2
    assert figures["challenger"]["false_alarm_rate"] > figures["champion"]["false_alarm_rate"]
    state = registry.state("refuse")
    assert state.aliases == {"champion": 1, "challenger": 2}
    record = state.history[-1]
    assert (record["alias"], record["version"], record["previous"]) == ("challenger", 2, 2)
    assert record["reason"].startswith("retrain: refused refuse@2 over refuse@1")
    assert [e["action"] for e in state.history] == ["publish", "alias", "publish", "alias", "alias"]


def test_an_empty_topic_is_one_clear_line(kafka_bootstrap, new_topic, tmp_path, capsys):
    from connectors import schema_store
    from tests.jobs.monitoring_data import SCHEMA

    topic = new_topic("empty")
    schema_store.register(kafka_bootstrap, topic, SCHEMA)
    assert retrain.main(["--topic", topic, "--once", "--bootstrap-servers", kafka_bootstrap,
                         "--model-store", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: topic {topic!r} holds no records to train on"]


def test_the_loop_runs_a_cycle_every_interval_and_goes_on_after_a_failed_one(kafka_bootstrap, new_topic, tmp_path):
    """`--every`: the first cycle fails (the topic's schema is not registered yet) and says so in one
    line; the loop goes on, the next cycles publish, and Ctrl-C while it waits for the next cycle ends
    it with 0."""
    import datetime as dt
    import signal
    import subprocess
    import sys

    from connectors import schema_store

    topic = new_topic("loop")
    # 20 s between cycle starts: a cycle of these small models takes 5-10 s, so the loop then waits
    command = [sys.executable, "-m", "jobs.retrain", "--topic", topic, "--every", "20s", "--last-hours", str(10 / 60),
               "--bootstrap-servers", kafka_bootstrap, "--model-store", str(tmp_path), *TRAIN]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def waiting() -> bool:   # the last line says when the next cycle starts, and that is a while off
        if not lines or not lines[-1].startswith("next cycle at "):
            return False
        at = dt.datetime.fromisoformat(lines[-1].removeprefix("next cycle at ").replace("Z", "+00:00"))
        return (at - dt.datetime.now(dt.timezone.utc)).total_seconds() > 3

    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if sum("decision recorded" in line for line in lines) >= 2 and waiting():
                break
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "this cycle failed" in line and not schema_store.lookup(kafka_bootstrap, topic):
                produce(kafka_bootstrap, topic, segment(0, 10))      # registers the schema and writes the readings
        assert sum("decision recorded" in line for line in lines) == 2 and waiting(), "\n".join(lines)
        time.sleep(1)   # the line is written just before the loop goes to sleep
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    failed = [line for line in lines if "this cycle failed" in line]
    assert failed and all(line.startswith("error: this cycle failed: ") for line in failed), "\n".join(lines)
    assert not any("Traceback" in line for line in lines)
    events = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.model-events")]
    assert [e["decision"] for e in events][:1] == ["first"] and len(events) == 2
    assert ModelRegistry(str(tmp_path)).state(topic).aliases["champion"] in (1, 2)


def test_a_challenger_is_calibrated_per_entity_as_its_champion_is(kafka_bootstrap, new_topic, tmp_path, capsys):
    from jobs import train_autoencoder

    topic, store = new_topic("calibrated"), str(tmp_path / "models")
    produce(kafka_bootstrap, topic, segment(0, 30))   # 100 vehicles, 90 readings each
    assert train_autoencoder.main(["--topic", topic, "--model-name", "calibrated", "--bootstrap-servers",
                                   kafka_bootstrap, "--model-store", store, "--threshold-per", "entity",
                                   "--entity-min-readings", "10", "--eval-fraction", "0", *TRAIN[:-2]]) == 0
    decision, _ = cycle(kafka_bootstrap, store, topic, "calibrated", 30 / 60, capsys)
    registry = ModelRegistry(store)
    challenger = registry.manifest(registry.resolve(decision["challenger"]))
    champion = registry.manifest(registry.resolve("calibrated@1"))
    assert challenger["threshold_rule"]["per"] == "entity" and challenger["threshold_rule"]["entity_min_readings"] == 10
    # (a vehicle whose validation readings hold a labelled failure may have too few left)
    assert len(set(challenger["thresholds_by_entity"]) & set(champion["thresholds_by_entity"])) >= 80
    assert decision["decision"] in ("promoted", "refused")
