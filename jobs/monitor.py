"""Monitor a scoring job's models through Kafka: per model version and per minute, to a metrics topic.

    vigil monitor --scored telemetry.scored --dlq telemetry.dlq            # keeps running
    vigil monitor --scored telemetry.scored --bounded                      # up to the current end, then stops
    vigil monitor --scored telemetry.scored --labels telemetry.labels      # labels that come later, on a topic

Reads the scored topic (and the dead-letter and label topics, if given) with its own consumer:
read_committed, from the earliest offset (``--from-latest``: only new records), no consumer-group
offsets committed. Records are grouped by ``model_version`` and by the minute of their event time;
once event time has passed a minute's end by ``--lateness-seconds`` (or the input has been quiet
that long, or with ``--bounded`` at the end; what the topics held at start is read in full first, as
a scoring job's output is in no event-time order over a backlog) one JSON record per (version,
minute) goes to the metrics topic (key: the version): events scored, anomaly rate, score quantiles,
dead letters of the minute, drift (PSI per feature against the training baseline in the version's
manifest, and the largest) and, where labels arrive, precision/recall/false-alarm rate of the
minute and over the last ``--rolling-minutes``. Labels come in the scored records (the model's
label column) or on a label topic (``--labels``: JSON ``{"entity": <the entity pseudonym>, "time":
<event time>, "label": <fault or null>}``), before or after the reading, until its minute is
published; a topic label takes the place of the reading's in-event one; one for a minute already
published is counted as late and left out. A threshold crossed (max PSI above
``--drift-threshold``, rolling false-alarm rate above ``--max-false-alarm-rate``, rolling recall
below ``--min-recall``) for ``--persist-minutes`` minutes in a row writes a model-event (``status:
raised``, at the minute it is confirmed), and so does its return (``cleared``).
docs/monitoring.md lists every field.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, Producer, TopicPartition

from connectors.errors import ConnectorError
from connectors.kafka_io import check_broker, client_config, create_topic, end_offsets
from connectors.model_registry import ModelRef, ModelRegistry, RegistryError
from connectors.model_store import ModelStoreError
from connectors.privacy import pseudonym
from jobs.monitoring.metrics import ModelInfo, Monitor, Thresholds
from vigil.commands import Options, comma_list, command, option
from vigil.settings import VigilSettings, read_pseudonym_secret


def base_topic(scored: str) -> str:
    return scored[: -len(".scored")] if scored.endswith(".scored") else scored


class MonitorOptions(Options):
    """What to watch, where to publish, and the thresholds."""

    scored: str = option(..., "the scored topic to watch (<input>.scored)")
    dlq: str | None = option(None, "the dead-letter topic of the same job (<input>.dlq): dead letters per minute",
                             show_default="none")
    labels: str | None = option(None, 'a topic of labels, before or after their readings: JSON {"entity": <entity '
                                      'pseudonym>, "time": <event time>, "label": <fault or null>}',
                                show_default="none")
    labels_by_id: bool = option(False, "the label topic's entity is the entity's own id (as in the input topic): the "
                                       "monitor pseudonymises it with the settings' secret, as the jobs do")
    metrics_topic: str | None = option(None, "topic the metrics records of each minute go to",
                                       show_default="<input>.metrics")
    events_topic: str | None = option(None, "topic the events of thresholds crossed go to",
                                      show_default="<input>.model-events")
    bounded: bool = option(False, "read the topics up to their end at start, publish every minute and stop")
    from_latest: bool = option(False, "start at the topics' current end (only new records)")
    lateness_seconds: float = option(30.0, "a minute is published once event time passed its end by this much, "
                                           "or the input was quiet this long", ge=0)
    label_column: str | None = option(None, "the label column of the scored records",
                                      show_default="the model's (training.label of its manifest)")
    drift_features: list[str] | None = option(None, "features whose PSI counts for max PSI and drift events "
                                                    "(PSI is published for every feature)", parse=comma_list,
                                              show_default="every feature of the model")
    drift_threshold: float = option(0.2, "max PSI of a minute above this: a drift event", gt=0)
    min_events: int = option(100, "fewest readings of a minute for its PSI", ge=1)
    max_false_alarm_rate: float = option(0.02, "rolling false alarm rate above this: an accuracy event",
                                         ge=0, le=1)
    min_recall: float = option(0.5, "rolling recall below this: an accuracy event", ge=0, le=1)
    min_normal: int = option(200, "fewest normal labelled readings in the rolling window for a false alarm event",
                             ge=1)
    min_faults: int = option(20, "fewest fault readings in the rolling window for a recall event", ge=1)
    rolling_minutes: int = option(10, "minutes of the rolling precision/recall window", ge=1)
    persist_minutes: int = option(2, "consecutive minutes a figure must stay across a threshold (or back) before "
                                     "an event says so (1: at once)", ge=1)
    quiet: bool = option(False, "no line per published minute")


def model_info(settings: VigilSettings, label_column: str | None) -> Any:
    """``info(version)`` for Monitor: baseline, label and time columns from the version's manifest."""
    registry: list[ModelRegistry] = []

    def info(version: str) -> ModelInfo:
        fallback = ModelInfo(version, None, label_column, "event_time")
        try:
            if not registry:
                registry.append(ModelRegistry(settings.model_store,
                                              settings.s3 if settings.s3_for(settings.model_store) else None))
            manifest = registry[0].manifest(registry[0].resolve(ModelRef.parse(version)))
        except (RegistryError, ModelStoreError, ValueError, OSError) as exc:
            return ModelInfo(version, None, label_column, "event_time",
                             note=f"not found in the model registry {settings.model_store}: {exc}")
        training = manifest.get("training") or {}
        label, time_col = label_column or training.get("label"), training.get("time") or fallback.time
        entity = f"{training['entity']}_pseudonym" if training.get("entity") else None   # else the Kafka key
        if "baseline" not in manifest:
            return ModelInfo(version, None, label, time_col, note="its manifest has no baseline (trained before "
                                                                  "baselines were kept)", entity=entity)
        return ModelInfo(version, manifest["baseline"], label, time_col, entity=entity)

    return info


def describe_minute(m: dict[str, Any]) -> str:
    parts = [f"{m['events']} events"]
    if m["events"]:
        parts.append(f"anomaly rate {m['anomaly_rate']:.2%}")
        if m.get("score"):
            parts.append(f"score p50/p99 {m['score']['p50']:.3g}/{m['score']['p99']:.3g}")
    parts.append(f"dlq {m['dlq']['count']}")
    d = m.get("drift") or {}
    if d.get("max_psi") is not None:
        parts.append(f"max PSI {d['max_psi']:.3f} ({d['max_feature']})")
    r = m.get("rolling")
    if r:
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        parts.append(f"rolling precision {fmt(r['precision'])} recall {fmt(r['recall'])} "
                     f"false alarms {fmt(r['false_alarm_rate'])}")
    return f"{m['minute']} {m['model_version']}: " + ", ".join(parts)


def describe_event(e: dict[str, Any]) -> str:
    f = e["figures"]
    value = f.get("max_psi") if e["kind"] == "drift" else f.get(e["metric"])
    where = f" ({f['feature']})" if e["kind"] == "drift" else ""
    return (f"model-event: {e['kind']} {e['status']} for {e['model_version']} at {e['minute']}: {e['metric']} "
            f"{value:.3f}{where}, threshold {e['threshold']:g}")


def run(settings: VigilSettings, o: MonitorOptions) -> int:
    if o.labels and o.labels in (o.scored, o.dlq):
        raise ValueError(f"--labels {o.labels}: the label topic must be a topic of its own, not the scored or "
                         f"dead-letter one")
    # SettingsError (one line) when the secret cannot be read
    secret = read_pseudonym_secret(settings.pseudonym.secret_file, secret=settings.pseudonym.secret) \
        if o.labels and o.labels_by_id else None
    bootstrap = settings.bootstrap_servers
    check_broker(bootstrap)
    base = base_topic(o.scored)
    metrics_topic, events_topic = o.metrics_topic or f"{base}.metrics", o.events_topic or f"{base}.model-events"
    topics = [o.scored, *([o.dlq] if o.dlq else []), *([o.labels] if o.labels else [])]
    marks = {t: end_offsets(bootstrap, t) for t in topics}   # ConnectorError naming a missing topic
    for topic in (metrics_topic, events_topic):
        create_topic(bootstrap, topic)
    thresholds = Thresholds(drift_psi=o.drift_threshold, min_events=o.min_events,
                            max_false_alarm_rate=o.max_false_alarm_rate, min_recall=o.min_recall,
                            min_normal=o.min_normal, min_faults=o.min_faults, rolling_minutes=o.rolling_minutes,
                            persist_minutes=o.persist_minutes)
    monitor = Monitor(model_info(settings, o.label_column), thresholds, lateness_ms=int(o.lateness_seconds * 1000),
                      drift_features=o.drift_features, label_topic=bool(o.labels))
    producer = Producer({**client_config(bootstrap), "acks": "all", "enable.idempotence": True, "linger.ms": 20})
    failures: list[str] = []
    published = {"minutes": 0, "events": 0}

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    notes_shown, label_problem_shown = 0, False

    def publish(final: bool = False) -> None:
        nonlocal notes_shown, label_problem_shown
        for key, target in targets.items():   # a partition with records from before the start still to read is busy
            if key[0] == o.scored and position[key] + 1 < target:
                monitor.expect(key[1], seen=time.monotonic())
        # a partition that sent nothing for --lateness-seconds does not hold the minutes back
        metrics, events = monitor.close(final, idle=time.monotonic() - max(o.lateness_seconds, 1.0))
        for note in monitor.notes[notes_shown:]:
            print(f"note: {note}", flush=True)
        notes_shown = len(monitor.notes)
        if monitor.label_problem and not label_problem_shown:
            print(f"note: a record on {o.labels} is not a label and is left out (so is every such record; the "
                  f"final line counts them): {monitor.label_problem}", flush=True)
            label_problem_shown = True
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for m in metrics:
            producer.produce(metrics_topic, key=(m["model_version"] or "").encode(),
                             value=json.dumps({**m, "published_at": stamp}).encode(), on_delivery=delivered)
            if not o.quiet:
                print(describe_minute(m), flush=True)
        for e in events:
            producer.produce(events_topic, key=e["model_version"].encode(),
                             value=json.dumps({**e, "source": "monitor", "published_at": stamp}).encode(),
                             on_delivery=delivered)
            print(describe_event(e), flush=True)
        published["minutes"] += len(metrics)
        published["events"] += len(events)
        producer.poll(0)

    consumer = Consumer({**client_config(bootstrap), "group.id": f"vigil-monitor-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    start = OFFSET_END if o.from_latest else OFFSET_BEGINNING
    consumer.assign([TopicPartition(t, p, start) for t in topics for p in marks[t]])
    # what the topics held at start (read in full before minutes are published; none with --from-latest)
    targets = {} if o.from_latest else {(t, p): high for t in topics for p, (low, high) in marks[t].items()
                                        if high > low}
    position = dict.fromkeys(targets, -1)
    for topic, partition in targets:
        if topic == o.scored:   # minutes wait for every partition with records to come (until it is idle)
            monitor.expect(partition, seen=time.monotonic())
    print(f"monitoring {' and '.join(topics)} -> {metrics_topic}, {events_topic}"
          f"{' (bounded)' if o.bounded else ''}", flush=True)
    quiet_since = time.monotonic()
    try:
        while True:
            if o.bounded and all(position[k] + 1 >= targets[k] for k in targets):
                break
            batch = consumer.consume(num_messages=5000, timeout=0.5)
            for msg in batch:
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise ConnectorError(f"error reading {msg.topic()!r}: {msg.error()}")
                position[(msg.topic(), msg.partition())] = msg.offset()
                try:
                    record = json.loads(msg.value())
                except (TypeError, ValueError):
                    if msg.topic() == o.labels:
                        monitor.malformed_label(f"offset {msg.offset()} of partition {msg.partition()} is not JSON")
                    else:
                        monitor.malformed += 1
                    continue
                if msg.topic() == o.scored:
                    monitor.add_scored(record, source=msg.partition(), seen=time.monotonic(), key=msg.key())
                elif msg.topic() == o.labels:
                    if secret is not None and isinstance(record, dict) and isinstance(record.get("entity"), str):
                        record["entity"] = pseudonym(secret, record["entity"])
                    monitor.add_label(record)
                else:
                    monitor.add_dead_letter(record)
            if batch:
                quiet_since = time.monotonic()
            if o.bounded or any(position[k] + 1 < targets[k] for k in targets):
                for tp in consumer.position([TopicPartition(t, p) for t, p in targets]):
                    if tp.offset >= 0:   # past aborted records and transaction markers
                        key = (tp.topic, tp.partition)
                        position[key] = max(position[key], tp.offset - 1)
                if o.bounded or any(position[k] + 1 < targets[k] for k in targets):
                    continue   # records from before the start are in no event-time order: publish once read
            publish(final=time.monotonic() - quiet_since > o.lateness_seconds)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    publish(final=True)
    left = producer.flush(30)
    if left or failures:
        raise ConnectorError(f"{left + len(failures)} metrics records were not delivered: {failures[:3]}")
    print(f"published {published['minutes']} metrics record(s) to {metrics_topic}, {published['events']} "
          f"model-event(s) to {events_topic}; {monitor.late} late and {monitor.malformed} malformed record(s) "
          f"left out", flush=True)
    if o.labels:
        c = monitor.label_summary()
        print(f"labels from {o.labels}: {c['matched']} matched a reading; {c['unmatched']} matched none, {c['late']} "
              f"late (their minute already published) and {c['malformed']} malformed left out", flush=True)
    return 0


COMMAND = command("monitor", __doc__, run, options=MonitorOptions,
                  settings_flags=("kafka.bootstrap_servers", "model.store"),
                  expected_errors=(ConnectorError, ModelStoreError, ValueError), prog="python -m jobs.monitor")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
