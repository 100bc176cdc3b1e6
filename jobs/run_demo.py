"""The whole story on one machine: simulate -> train from Kafka -> score -> drift -> monitor -> retrain -> summary.

    vigil demo            (what `make demo` runs after starting the services)

1. the fleet's history (labelled failures included) is simulated into the ``demo.telemetry`` topic;
2. the autoencoder is trained straight from that Kafka log and published to the model store;
3. the Table API scoring job (jobs.score_events) starts on the embedded mini-cluster and keeps
   running, while the same fleet drives on live (sped up) and a few broken records arrive;
4. alerts are printed as the job commits them;
5. drift: a workshop recalibrates the fleet's gauges (``FleetSettings.recalibrated_from``: not a
   fault, no label) and the champion flags the new normal;
6. ``vigil monitor`` reads the scored topic and reports the drift (and the false alarms) as
   model-events;
7. one cycle of ``vigil retrain`` trains a challenger on the recalibrated window, compares it with
   the champion on held-out readings and promotes it; the running job picks it up without a
   restart;
8. the job is stopped and a summary compares each version's alerts with the simulator's labels,
   and shows where the Parquet history is.

The demo owns its topics (``demo.telemetry*``) and tier folder and resets them at the start, so
every run tells the same story; the trained models stay in the registry (model demo.telemetry).
It runs the parts the way a user does: the simulator and the trainer through their library
functions, the scoring job, the monitor and the retraining cycle as their own processes
(``python -m jobs.<name>``).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from connectors.avro_serde import load_schema
from connectors.errors import ConnectorError
from connectors.kafka_io import check_broker, client_config, read_all
from connectors.records import outputs
from vigil.commands import Options, OptionsError, command, option
from vigil.settings import PROJECT_ROOT, VigilSettings

# The demo's topic holds the simulator's telemetry: its outputs' field names come from the contract.
OUT = outputs(load_schema())


def banner(step: str) -> None:
    print(f"\n\033[1m== {step}\033[0m", flush=True)


class DemoOptions(Options):
    topic: str = option("demo.telemetry", "the demo's topic (it and its outputs are reset at the start)")
    tier: str | None = option(None, "the demo's Parquet tier", show_default="<home>/tier/demo")
    history_vehicles: int = option(20, "vehicles in the simulated history", ge=1)
    history_events: int = option(24_000, "readings of the simulated history", ge=100)
    live_seconds: int = option(20, "wall-clock seconds of live traffic", ge=1)
    live_speed: int = option(10, "simulated seconds per wall-clock second", ge=1)
    alerts_shown: int = option(25, "live alerts printed at most", ge=0)
    drift_minutes: int = option(10, "simulated minutes of traffic after the gauges' recalibration, then monitor, "
                                    "retrain and promote (0: no drift chapter)", ge=0)
    dashboard_port: int = option(8050, "port of the live dashboard (0: any free port)", ge=0, le=65535)


def reset_topics(bootstrap: str, prefix: str) -> None:
    from connectors.kafka_io import delete_topic, list_topics

    for name in list_topics(bootstrap):
        if name == prefix or name.startswith(prefix + "."):
            delete_topic(bootstrap, name)
    time.sleep(1.0)  # topic deletion is asynchronous on the broker


def start_scoring(settings: VigilSettings, o: DemoOptions, tier: str, log_path: Path) -> subprocess.Popen:
    """Run jobs.score_events in its own process group; returns once the job is submitted."""
    command = [sys.executable, "-m", "jobs.score_events", "--input", o.topic, "--bootstrap-servers",
               settings.bootstrap_servers, "--model-store", settings.model_store, "--tier", tier,
               "--checkpoint-interval", "2 s", "--model-refresh-seconds", "5", "--group-id", "vigil-demo",
               "--from-earliest"]  # every demo run tells the story from the start (its topics were reset)
    log = open(log_path, "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if "submitted job" in text:
            print("  " + next(line for line in text.splitlines() if "submitted job" in line), flush=True)
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"the scoring job exited with code {proc.returncode}; see {log_path}:\n"
                               + "\n".join(text.splitlines()[-20:]))
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"the scoring job was not submitted within 180 s; see {log_path}")


def start_dashboard(settings: VigilSettings, o: DemoOptions, folder: Path) -> str | None:
    """The live dashboard of the demo's topic, in its own process (it outlives the demo; `make down`
    stops it); returns its URL, or None when it could not start (the demo goes on without it)."""
    stop_dashboard(settings)
    command = [sys.executable, "-m", "jobs.dashboard", "--input", o.topic, "--port", str(o.dashboard_port),
               "--bootstrap-servers", settings.bootstrap_servers, "--model-store", settings.model_store]
    log = folder / "dashboard.log"
    proc = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "dashboard: http" in text:
            dashboard_pid(settings).write_text(str(proc.pid))
            return text.split("dashboard: ", 1)[1].split()[0]
        if proc.poll() is not None:
            print(f"  (the dashboard did not start: {text.strip().splitlines()[-1] if text.strip() else proc.returncode})")
            return None
        time.sleep(0.3)
    stop(proc)
    return None


def dashboard_pid(settings: VigilSettings) -> Path:
    return settings.home / "demo" / "dashboard.pid"


def stop_dashboard(settings: VigilSettings) -> bool:
    """Stop the demo's dashboard if one runs (`python -m stack down` calls this too)."""
    try:
        pid = int(dashboard_pid(settings).read_text())
        os.killpg(pid, signal.SIGTERM)
        stopped = True
    except (OSError, ValueError):
        stopped = False
    dashboard_pid(settings).unlink(missing_ok=True)
    return stopped


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def broken_records(bootstrap: str, topic: str) -> int:
    """A few records no sensor should send: truncated, random bytes, NaN, out of range."""
    from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, schema_id
    from jobs.simulation import FleetSettings, generate

    schema = load_schema()
    serialize = AvroSerializer(schema)
    header = [(SCHEMA_HEADER, schema_id(schema).encode())]
    sample = next(iter(generate(FleetSettings(vehicles=1, events=1, start=dt.datetime.now(dt.timezone.utc)))))
    good = serialize(sample)
    bad = [good[:20], os.urandom(64), serialize({**sample, "engine_rpm": float("nan")}),
           serialize({**sample, "coolant_temp_c": 480.0}), serialize({**sample, "firmware_version": "beta"})]
    producer = Producer(client_config(bootstrap))
    for payload in bad:
        producer.produce(topic, key=sample["vehicle_id"].encode(), value=payload, headers=header)
    if producer.flush(30):
        raise ConnectorError("could not deliver the broken demo records")
    return len(bad)


def follow_alerts(bootstrap: str, topic: str, stop_event: threading.Event, shown: list[int], limit: int,
                  live_from: str) -> None:
    """Print live alerts (event time >= ``live_from``) as the job commits them, at most ``limit`` lines."""
    consumer = Consumer({**client_config(bootstrap), "group.id": f"vigil-demo-alerts-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    try:
        while not stop_event.is_set():
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                a = json.loads(msg.value())
                if a[OUT.time] < live_from:
                    continue  # an alert on the history backlog: counted in the summary
                shown[0] += 1
                if shown[0] <= limit:
                    if a["status"] == "open":
                        label = a.get(OUT.label) or "no label (false alarm?)"
                        what = f"opens   score {a['score']:8.3f}  [{label}]"
                    else:  # the closing reading is a normal one: its label says nothing about the episode
                        what = f"closes  after {a['anomalies']} anomalous reading(s), peak {a['max_score']:8.3f}"
                    print(f"  ALERT {a[OUT.entity]}  {a[OUT.time][:19]}  {what}  model {a['model_version']}",
                          flush=True)
                elif shown[0] == limit + 1:
                    print("  ... (more alerts arrive; the summary counts them all)", flush=True)
    finally:
        consumer.close()


def wait_until_scored(bootstrap: str, topic: str, expected: int, timeout: float) -> int:
    """Wait until scored + dead letters account for every input record; returns how many did."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = sum(1 for _ in read_all(bootstrap, f"{topic}.scored")) + \
            sum(1 for _ in read_all(bootstrap, f"{topic}.dlq"))
        if done >= expected:
            return done
        time.sleep(2)
    return done


def scored_frame(bootstrap: str, topic: str) -> Any:
    import pandas as pd

    return pd.DataFrame([json.loads(m.value()) for m in read_all(bootstrap, f"{topic}.scored")],
                        columns=OUT.scored.names)


def anomaly_rate(rows: Any) -> float:
    return float(rows["is_anomaly"].fillna(False).astype(bool).mean()) if len(rows) else 0.0


def run_step(module: str, *args: str) -> None:
    """``python -m <module> <args>`` as its own process, its output shown as it comes; RuntimeError
    when it fails (its own one-line error is above)."""
    code = subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT).returncode
    if code:
        raise RuntimeError(f"python -m {module} exited with {code}")


def recalibration(settings: VigilSettings, o: DemoOptions, step: Callable[[str], None], skip: int,
                  produced: int) -> tuple[int, str]:
    """Steps 5-7: drift, the monitor, a retraining cycle; returns (records produced, the time of the
    recalibration) or raises RuntimeError when the job does not keep up."""
    from jobs.simulation import RECALIBRATION, STEADY_SENSORS, FleetSettings, produce

    bootstrap, topic = settings.bootstrap_servers, o.topic
    fleet = FleetSettings(vehicles=o.history_vehicles)
    at = fleet.start + dt.timedelta(seconds=-(-skip // o.history_vehicles) * fleet.interval_s)
    shifted = ", ".join(f"{k} +{v:g}" for k, v in RECALIBRATION.items())
    step(f"drift: at {at:%H:%M:%S} a workshop recalibrates every vehicle's gauges ({shifted}); "
           f"{o.drift_minutes} minutes of traffic follow")
    events = o.history_vehicles * 60 * o.drift_minutes
    fleet = FleetSettings(vehicles=o.history_vehicles, events=skip + events, recalibrated_from=at)
    produce(fleet, bootstrap, topic, skip=skip)
    produced += events
    if wait_until_scored(bootstrap, topic, produced, timeout=240) < produced:
        raise RuntimeError("the scoring job did not keep up with the recalibrated traffic")
    scored = scored_frame(bootstrap, topic)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S")
    before, after = scored[scored[OUT.time] < stamp], scored[scored[OUT.time] >= stamp]
    print(f"  the champion flags {anomaly_rate(after):.1%} of the {len(after)} recalibrated readings "
          f"({anomaly_rate(before):.1%} of the {len(before)} before); none of them is a fault")

    step("vigil monitor: per model version and minute, to Kafka; thresholds crossed become model-events")
    flags = ["--bootstrap-servers", bootstrap, "--model-store", settings.model_store, "--quiet",
             "--drift-features", ",".join(STEADY_SENSORS)]
    run_step("jobs.monitor", "--scored", f"{topic}.scored", "--dlq", f"{topic}.dlq", "--bounded", *flags)
    minutes = [json.loads(m.value()) for m in read_all(bootstrap, f"{topic}.metrics")]
    psi = {False: [], True: []}
    for m in minutes:
        if (m.get("drift") or {}).get("max_psi") is not None and m["minute"][:19] != stamp[:16] + ":00":
            psi[m["minute"][:19] >= stamp].append(m["drift"]["max_psi"])
    if psi[False] and psi[True]:
        print(f"  max PSI of {', '.join(STEADY_SENSORS)} per minute: {min(psi[False]):.2f} .. {max(psi[False]):.2f} "
              f"before the recalibration, {min(psi[True]):.2f} .. {max(psi[True]):.2f} after "
              f"(metrics in {topic}.metrics)")

    step("vigil retrain: a challenger trained on the recalibrated window, compared with the champion on "
           "held-out readings")
    hours = (o.drift_minutes - 1) / 60   # the window holds recalibrated readings only
    run_step("jobs.retrain", "--topic", topic, "--once", "--last-hours", f"{hours:.4f}", *flags)
    time.sleep(8)   # the job looks at the registry every 5 s (--model-refresh-seconds)
    more = o.history_vehicles * 60
    fleet = FleetSettings(vehicles=o.history_vehicles, events=skip + events + more, recalibrated_from=at)
    print(f"  one more minute of traffic for the running job, {more} readings", flush=True)
    produce(fleet, bootstrap, topic, skip=skip + events)
    produced += more
    if wait_until_scored(bootstrap, topic, produced, timeout=180) < produced:
        raise RuntimeError("the scoring job did not score the last minute in time")
    return events + more, stamp


def summarise(bootstrap: str, topic: str, tier: str, produced: int, live_from: str,
              recalibrated: str | None) -> None:
    import numpy as np
    import pandas as pd

    from jobs.training.trainer import classification_metrics

    scored = scored_frame(bootstrap, topic)
    dlq = [json.loads(m.value()) for m in read_all(bootstrap, f"{topic}.dlq")]
    episodes = sum(json.loads(m.value())["status"] == "open" for m in read_all(bootstrap, f"{topic}.alerts"))

    def flags(rows: pd.DataFrame) -> np.ndarray:
        return rows["is_anomaly"].fillna(False).to_numpy(dtype=bool)

    def line(rows: pd.DataFrame) -> str:
        m = classification_metrics(flags(rows), rows[OUT.label])
        return (f"{m['rows']} readings, {m['anomalies']} labelled: precision {m['precision']:.3f}  recall "
                f"{m['recall']:.3f}  F1 {m['f1']:.3f}  false-positive rate {m['false_positive_rate']:.4f}")

    print(f"  events produced      {produced}")
    print(f"  events scored        {len(scored)}  (model version(s): {', '.join(sorted(set(scored['model_version'])))})")
    print(f"  anomalies / alarm episodes  {int(flags(scored).sum())} / {episodes}")
    print(f"  dead letters         {len(dlq)}: " + ", ".join(f"{k} {v}" for k, v in
                                                          Counter(d['stage'] for d in dlq).most_common()))
    for d in dlq:
        print(f"      p{d['source_partition']}@{d['source_offset']}: {d['reason'][:100]}")
    after = scored[OUT.time] >= recalibrated if recalibrated else pd.Series(False, index=scored.index)
    first = sorted(set(scored["model_version"]), key=lambda v: int(v.rsplit("@", 1)[-1]))
    print("  against the simulator's labels, by the version that scored each reading:")
    for version in first:
        mine = scored["model_version"] == version
        for part, when in ((mine & ~after, "before the recalibration"), (mine & after, "after the recalibration")):
            if part.any():
                print(f"      {version} {when if recalibrated else ''}".rstrip() + f": {line(scored[part])}")
    first_part = scored[(scored["model_version"] == first[0]) & ~after]
    metrics = classification_metrics(flags(first_part), first_part[OUT.label])
    print(f"      recall by failure mode ({first[0]}): " +
          ", ".join(f"{k} {v:.2f}" for k, v in metrics["recall_by_mode"].items()))
    live = first_part[first_part[OUT.time] >= live_from]
    if len(live):
        print(f"      live traffic only ({first[0]}): {line(live)}")
    folder = tier.removeprefix("file://")
    files = [p for p in Path(folder).rglob("part-*") if not p.name.startswith(".")]
    if files:
        import pyarrow.dataset as ds

        rows = ds.dataset([str(f) for f in files], format="parquet").count_rows()
        print(f"\n  Parquet history: {rows} rows in {len(files)} file(s) under {folder}/dt=YYYY-MM-DD/hr=HH/")
        print("  read it with DuckDB:")
        print(f"      {sys.executable} -c \"import duckdb; print(duckdb.sql(\\\"SELECT dt, hr, count(*) AS events, "
              f"sum(is_anomaly::INT) AS anomalies FROM read_parquet('{folder}/*/*/part-*', hive_partitioning=true) "
              f"GROUP BY ALL ORDER BY ALL\\\"))\"")
        print("  or with pyarrow:")
        print(f"      {sys.executable} -c \"import pyarrow.dataset as ds; "
              f"print(ds.dataset('{folder}', format='parquet', partitioning='hive', exclude_invalid_files=True)"
              f".to_table().to_pandas().describe())\"")


def run(settings: VigilSettings, o: DemoOptions) -> int:
    import shutil

    from jobs.simulation import FleetSettings, produce, summary
    from jobs.training.trainer import TrainOptions, train_from_kafka

    if 0 < o.drift_minutes < 4:   # retraining needs a window of recalibrated readings, the first minute left out
        raise OptionsError(f"--drift-minutes must be 0 (no drift chapter) or at least 4, got {o.drift_minutes}")
    bootstrap = settings.bootstrap_servers
    tier = o.tier or (settings.home / "tier" / "demo").as_uri()
    demo_dir = settings.home / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    check_broker(bootstrap)
    stop_dashboard(settings)  # it would count the old topics' records twice
    reset_topics(bootstrap, o.topic)
    shutil.rmtree(tier.removeprefix("file://"), ignore_errors=True)
    url = start_dashboard(settings, o, demo_dir)
    if url:
        print(f"live dashboard: {url}  (open it now: it updates while the demo runs)", flush=True)

    total = 8 if o.drift_minutes else 5
    steps = iter(range(1, total + 1))

    def step(text: str) -> None:
        banner(f"{next(steps)}/{total} {text}")

    step(f"simulate the fleet's history into Kafka topic {o.topic}")
    from connectors import schema_store
    from connectors.kafka_io import create_topic

    history = FleetSettings(vehicles=o.history_vehicles, events=o.history_events)
    create_topic(bootstrap, o.topic, 3)
    schema_store.register(bootstrap, o.topic, load_schema())
    print(summary(produce(history, bootstrap, o.topic), o.topic))

    step("train the autoencoder straight from the Kafka log")
    manifest = train_from_kafka(settings, TrainOptions(topic=o.topic, quiet=True))
    ev = manifest["metrics"].get("evaluation", {})
    print(f"model {manifest['version']} published to {settings.model_store} as {manifest['alias']}")
    if "champion" not in manifest["alias"].split(", "):
        # an earlier demo's version is the champion; the demo owns this model and scores with the new one
        from connectors.model_registry import ModelRegistry

        registry = ModelRegistry(settings.model_store, settings.s3_for(settings.model_store))
        moved = registry.set_alias(o.topic, "champion", manifest["number"],
                                   reason="vigil demo scores with the model it has just trained")
        print(f"  {o.topic}@champion: {moved['previous']} -> {moved['version']} (the demo scores with the model "
              f"it has just trained; `vigil models history {o.topic}` keeps the move)")
    if "precision" in ev:
        print(f"  evaluation on {ev['rows']} readings ({ev['anomalies']} labelled failures): "
              f"precision {ev['precision']:.3f}, recall {ev['recall']:.3f}, F1 {ev['f1']:.3f}, "
              f"false-positive rate {ev['false_positive_rate']:.4f}")

    step("start the scoring job (Table API) on the embedded Flink mini-cluster")
    log_path = demo_dir / "score_events.log"
    proc = start_scoring(settings, o, tier, log_path)
    print(f"  job log: {log_path}")

    history_end = history.start + dt.timedelta(seconds=o.history_events // o.history_vehicles)
    live_from = history_end.strftime("%Y-%m-%dT%H:%M:%S")
    stop_event, shown = threading.Event(), [0]
    follower = threading.Thread(target=follow_alerts, args=(bootstrap, f"{o.topic}.alerts", stop_event, shown,
                                                            o.alerts_shown, live_from), daemon=True)
    try:
        step(f"live traffic: the fleet drives on ({o.live_speed}x real time) for {o.live_seconds} s, "
               f"plus a few broken records; alerts as the job commits them")
        follower.start()
        # the same fleet, continuing its timeline where the history ended, sped up
        live_events = o.history_vehicles * o.live_speed * o.live_seconds
        fleet = FleetSettings(vehicles=o.history_vehicles, events=o.history_events + live_events)
        counts = produce(fleet, bootstrap, o.topic, rate=1.0, skip=o.history_events, speed=float(o.live_speed))
        bad = broken_records(bootstrap, o.topic)
        produced = o.history_events + sum(counts.values()) + bad
        done = wait_until_scored(bootstrap, o.topic, produced, timeout=180)
        time.sleep(3)
        stop_event.set()
        follower.join(10)
        if done < produced:
            print(f"error: only {done} of {produced} records were scored or dead-lettered in time; see {log_path}",
                  file=sys.stderr)
            return 1
        recalibrated = None
        if o.drift_minutes:
            more, recalibrated = recalibration(settings, o, step, o.history_events + live_events, produced)
            produced += more
    finally:
        stop_event.set()
        stop(proc)
    step("summary")
    summarise(bootstrap, o.topic, tier, produced, live_from, recalibrated)
    print(f"\n  model report (loss curves, error histogram): {settings.model_store.removeprefix('file://')}/"
          f"{manifest['model_name']}/artifacts/{manifest['artifact']}/report.png")
    if url:
        print(f"  live dashboard: {url} (keeps running; `make down` stops it)")
    print("  services keep running; stop them with `make down`")
    return 0


def _expected_errors() -> tuple[type[BaseException], ...]:
    from connectors.model_store import ModelStoreError
    from udfs.feature_set import FeatureError

    return (ConnectorError, RuntimeError, ModelStoreError, FeatureError)


COMMAND = command("demo", __doc__, run, options=DemoOptions, settings_flags=("kafka.bootstrap_servers", "model.store"),
                  expected_errors=_expected_errors(), prog="python -m jobs.run_demo")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
