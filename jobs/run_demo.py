"""The whole story on one machine: simulate -> train from Kafka -> score continuously -> summary.

    python -m jobs.run_demo            (what `make demo` runs after starting the services)

1. the fleet's history (labelled failures included) is simulated into the ``demo.telemetry`` topic;
2. the autoencoder is trained straight from that Kafka log and published to the model store;
3. the Table API scoring job (jobs.score_events) starts on the embedded mini-cluster and keeps
   running, while the same fleet drives on live (sped up) and a few broken records arrive;
4. alerts are printed as the job commits them; at the end the job is stopped and a summary
   compares the alerts with the simulator's labels, and shows where the Parquet history is.

The demo owns its topics (``demo.telemetry*``) and tier folder and resets them at the start, so
every run tells the same story; the trained model stays in the model store as LATEST.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from connectors.errors import ConnectorError
from connectors.kafka_io import _QUIET, check_broker, read_all
from stack.settings import PROJECT_ROOT, StackSettings


def banner(step: str) -> None:
    print(f"\n\033[1m== {step}\033[0m", flush=True)


def reset_topics(bootstrap: str, prefix: str) -> None:
    from connectors.topics import delete_topic, list_topics

    for name in list_topics(bootstrap):
        if name == prefix or name.startswith(prefix + "."):
            delete_topic(bootstrap, name)
    time.sleep(1.0)  # topic deletion is asynchronous on the broker


def start_scoring(args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    """Run jobs.score_events in its own process group; returns once the job is submitted."""
    command = [sys.executable, "-m", "jobs.score_events", "--input", args.topic, "--bootstrap-servers",
               args.bootstrap_servers, "--model-store", args.model_store, "--tier", args.tier,
               "--checkpoint-interval", "2 s", "--model-refresh-seconds", "5", "--group-id", "vigil-demo"]
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
    from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, load_schema, schema_id
    from jobs.simulate_fleet import FleetSettings, generate

    schema = load_schema()
    serialize = AvroSerializer(schema)
    header = [(SCHEMA_HEADER, schema_id(schema).encode())]
    sample = next(iter(generate(FleetSettings(vehicles=1, events=1, start=dt.datetime.now(dt.timezone.utc)))))
    good = serialize(sample)
    bad = [good[:20], os.urandom(64), serialize({**sample, "engine_rpm": float("nan")}),
           serialize({**sample, "coolant_temp_c": 480.0}), serialize({**sample, "firmware_version": "beta"})]
    producer = Producer({"bootstrap.servers": bootstrap, **_QUIET})
    for payload in bad:
        producer.produce(topic, key=sample["vehicle_id"].encode(), value=payload, headers=header)
    if producer.flush(30):
        raise ConnectorError("could not deliver the broken demo records")
    return len(bad)


def follow_alerts(bootstrap: str, topic: str, stop_event: threading.Event, shown: list[int], limit: int,
                  live_from: str) -> None:
    """Print live alerts (event time >= ``live_from``) as the job commits them, at most ``limit`` lines."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"vigil-demo-alerts-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False, **_QUIET})
    consumer.subscribe([topic])
    try:
        while not stop_event.is_set():
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                a = json.loads(msg.value())
                if a["event_time"] < live_from:
                    continue  # an alert on the history backlog: counted in the summary
                shown[0] += 1
                if shown[0] <= limit:
                    label = a.get("failure_label") or "no label (false alarm?)"
                    print(f"  ALERT {a['vehicle_id_pseudonym']}  {a['event_time'][:19]}  score {a['score']:8.3f}"
                          f"  [{label}]  model {a['model_version']}", flush=True)
                elif shown[0] == limit + 1:
                    print(f"  ... (more alerts arrive; the summary counts them all)", flush=True)
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


def summarise(args: argparse.Namespace, manifest: dict[str, Any], produced: int, live_from: str) -> None:
    from jobs.train_autoencoder import classification_metrics

    import pandas as pd

    scored = pd.DataFrame([json.loads(m.value()) for m in read_all(args.bootstrap_servers, f"{args.topic}.scored")])
    dlq = [json.loads(m.value()) for m in read_all(args.bootstrap_servers, f"{args.topic}.dlq")]
    alerts = sum(1 for _ in read_all(args.bootstrap_servers, f"{args.topic}.alerts"))
    metrics = classification_metrics(scored["score"].to_numpy(), manifest["threshold"], scored["failure_label"])
    print(f"  events produced      {produced}")
    print(f"  events scored        {len(scored)}  (model version(s): {', '.join(sorted(set(scored['model_version'])))})")
    print(f"  anomalies / alerts   {int(scored['is_anomaly'].sum())} / {alerts}")
    print(f"  dead letters         {len(dlq)}: " + ", ".join(f"{k} {v}" for k, v in
                                                          Counter(d['stage'] for d in dlq).most_common()))
    for d in dlq:
        print(f"      p{d['source_partition']}@{d['source_offset']}: {d['reason'][:100]}")
    print(f"  against the simulator's labels ({metrics['anomalies']} labelled failures among {metrics['rows']}):")
    print(f"      precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}  F1 {metrics['f1']:.3f}  "
          f"false-positive rate {metrics['false_positive_rate']:.4f}")
    print("      recall by failure mode: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics["recall_by_mode"].items()))
    live = scored[scored["event_time"] >= live_from]
    if len(live):
        m = classification_metrics(live["score"].to_numpy(), manifest["threshold"], live["failure_label"])
        print(f"      live traffic only ({m['rows']} readings, {m['anomalies']} labelled): precision {m['precision']:.3f}"
              f"  recall {m['recall']:.3f}  false-positive rate {m['false_positive_rate']:.4f}")
    tier = args.tier.removeprefix("file://")
    files = [p for p in Path(tier).rglob("part-*") if not p.name.startswith(".")]
    if files:
        import pyarrow.dataset as ds

        rows = ds.dataset([str(f) for f in files], format="parquet").count_rows()
        print(f"\n  Parquet history: {rows} rows in {len(files)} file(s) under {tier}/dt=YYYY-MM-DD/hr=HH/")
        print("  read it with DuckDB:")
        print(f"      {sys.executable} -c \"import duckdb; print(duckdb.sql(\\\"SELECT dt, hr, count(*) AS events, "
              f"sum(is_anomaly::INT) AS anomalies FROM read_parquet('{tier}/*/*/part-*', hive_partitioning=true) "
              f"GROUP BY ALL ORDER BY ALL\\\"))\"")
        print("  or with pyarrow:")
        print(f"      {sys.executable} -c \"import pyarrow.dataset as ds; "
              f"print(ds.dataset('{tier}', format='parquet', partitioning='hive', exclude_invalid_files=True)"
              f".to_table().to_pandas().describe())\"")


def main(argv: list[str] | None = None) -> int:
    stack = StackSettings.from_env()
    p = argparse.ArgumentParser(prog="python -m jobs.run_demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topic", default="demo.telemetry")
    p.add_argument("--bootstrap-servers", default=stack.bootstrap_servers)
    p.add_argument("--model-store", default=(stack.home / "models").as_uri())
    p.add_argument("--tier", default=(stack.home / "tier" / "demo").as_uri())
    p.add_argument("--history-vehicles", type=int, default=20)
    p.add_argument("--history-events", type=int, default=24_000)
    p.add_argument("--live-seconds", type=int, default=20, help="wall-clock seconds of live traffic")
    p.add_argument("--live-speed", type=int, default=10, help="simulated seconds per wall-clock second")
    p.add_argument("--alerts-shown", type=int, default=25)
    args = p.parse_args(argv)
    demo_dir = stack.home / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)

    from jobs import simulate_fleet, train_autoencoder
    from jobs.simulate_fleet import FleetSettings

    try:
        check_broker(args.bootstrap_servers)
        reset_topics(args.bootstrap_servers, args.topic)
        import shutil

        shutil.rmtree(args.tier.removeprefix("file://"), ignore_errors=True)

        banner(f"1/5 simulate the fleet's history into Kafka topic {args.topic}")
        if simulate_fleet.main(["--topic", args.topic, "--vehicles", str(args.history_vehicles), "--events",
                                str(args.history_events), "--bootstrap-servers", args.bootstrap_servers]) != 0:
            return 1

        banner("2/5 train the autoencoder straight from the Kafka log")
        if train_autoencoder.main(["--topic", args.topic, "--bootstrap-servers", args.bootstrap_servers,
                                   "--model-store", args.model_store, "--quiet"]) != 0:
            return 1
        from connectors.model_store import ModelStore

        manifest = ModelStore(args.model_store, stack).manifest()

        banner("3/5 start the scoring job (Table API) on the embedded Flink mini-cluster")
        log_path = demo_dir / "score_events.log"
        proc = start_scoring(args, log_path)
        print(f"  job log: {log_path}")
    except (ConnectorError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    history_end = FleetSettings().start + dt.timedelta(seconds=args.history_events // args.history_vehicles)
    live_from = history_end.strftime("%Y-%m-%dT%H:%M:%S")
    stop_event, shown = threading.Event(), [0]
    follower = threading.Thread(target=follow_alerts, args=(args.bootstrap_servers, f"{args.topic}.alerts",
                                                            stop_event, shown, args.alerts_shown, live_from),
                                daemon=True)
    try:
        banner(f"4/5 live traffic: the fleet drives on ({args.live_speed}x real time) for {args.live_seconds} s, "
               f"plus a few broken records; alerts as the job commits them")
        follower.start()
        # the same fleet, continuing its timeline where the history ended, sped up 10x
        live_events = args.history_vehicles * args.live_speed * args.live_seconds
        fleet = FleetSettings(vehicles=args.history_vehicles, events=args.history_events + live_events)
        counts = simulate_fleet.produce(fleet, args.bootstrap_servers, args.topic, rate=1.0,
                                        skip=args.history_events, speed=float(args.live_speed))
        bad = broken_records(args.bootstrap_servers, args.topic)
        produced = args.history_events + sum(counts.values()) + bad
        done = wait_until_scored(args.bootstrap_servers, args.topic, produced, timeout=180)
        time.sleep(3)
        stop_event.set()
        follower.join(10)
        if done < produced:
            print(f"error: only {done} of {produced} records were scored or dead-lettered in time; see {log_path}",
                  file=sys.stderr)
            return 1
    finally:
        stop_event.set()
        stop(proc)
    banner("5/5 summary")
    summarise(args, manifest, produced, live_from)
    print(f"\n  model report (loss curves, error histogram): "
          f"{args.model_store.removeprefix('file://')}/{manifest['version']}/report.png")
    print("  services keep running; stop them with `make down`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
