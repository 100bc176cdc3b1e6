"""The scoring job through the DataStream API, keyed by vehicle, with per-vehicle alert state.

    python -m jobs.score_events_stream --input telemetry [--alert-count 3 --alert-window 60] [--bounded]

Each record is decoded, pseudonymised, checked (impossible values and the expectation suite),
and scored with the same model handle as the ANOMALY UDF, inside one KeyedProcessFunction keyed by
the Kafka record key (the vehicle id). What the Table job cannot express simply lives in keyed
state: an alert is raised only when a vehicle produces ``--alert-count`` anomalous readings
within ``--alert-window`` seconds of event time, and it carries those readings' scores and
offsets. One alert per burst: the state is cleared when an alert fires.

Outputs (exactly-once Kafka sinks): ``<input>.stream.scored`` (main output), side outputs
``<input>.stream.alerts`` and ``<input>.stream.dlq`` (same DLQ record shape as jobs.score_events).

Scoring here is per record (the DataStream API has no vectorized Python functions), so this job
trades throughput for stateful per-vehicle logic; jobs.score_events is the high-throughput path.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import time
from typing import Any

import numpy as np
from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, StateTtlConfig
from pyflink.common.time import Time
from pyflink.table import Table

from connectors import flink_kafka
from connectors.avro_serde import SCHEMA_HEADER, roles
from connectors.errors import ConnectorError, SchemaError
from connectors.model_store import ModelStoreError
from jobs.score_events import ScoreSettings, prepare
from stack import flink_home
from stack.settings import StackSettings

DLQ = OutputTag("dead-letters", Types.STRING())
ALERTS = OutputTag("alerts", Types.STRING())


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value).isoformat(
            timespec="milliseconds")
    return str(value)


class ScoreVehicle(KeyedProcessFunction):
    """Decode, check and score one vehicle's readings; raise K-in-window alerts from keyed state."""

    def __init__(self, schema: dict[str, Any], pseudonym_secret: bytes, suite: dict[str, Any] | None,
                 handle: Any, source_topic: str, alert_count: int, alert_window_s: float) -> None:
        self.schema = schema
        self._secret = pseudonym_secret
        self.suite = suite
        self.handle = handle
        self.source_topic = source_topic
        self.alert_count = alert_count
        self.alert_window_ms = int(alert_window_s * 1000)

    def __repr__(self) -> str:  # keep the secret out of logs and plans
        return f"ScoreVehicle(topic={self.source_topic!r})"

    def open(self, runtime_context: RuntimeContext) -> None:
        from udfs.preprocess import DecodeTelemetry

        self._decoder = DecodeTelemetry(self.schema, self._secret)
        self._decoder.open(None)
        self._validator = None
        if self.suite is not None:
            from udfs.validate_features import SuiteValidator

            self._validator = SuiteValidator(self.suite)
        self.handle.open(runtime_context.get_job_parameter)
        role = roles(self.schema)
        self._time = role["time"]
        self._label = role["label"]
        self._entity = f"{role['entity']}_pseudonym"
        ttl = StateTtlConfig.new_builder(Time.milliseconds(max(self.alert_window_ms * 10, 60_000))).build()
        descriptor = ListStateDescriptor("recent_anomalies", Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(ttl)
        self._recent = runtime_context.get_list_state(descriptor)
        from udfs import metrics

        group = runtime_context.get_metrics_group().add_group("vigil")
        self._scored = group.counter("events_scored")
        self._anomalies = group.counter("anomalies")
        self._dead = group.counter("dead_letters")
        self._alerts = group.counter("alerts")
        self._version_info = metrics.ModelVersionInfo(group)

    def _dead_letter(self, row: Any, reason: str, model_version: str | None = None) -> tuple[OutputTag, str]:
        self._dead.inc()
        payload = row["payload"]
        return DLQ, json.dumps({
            "reason": reason, "stage": reason.split(":", 1)[0], "source_topic": self.source_topic,
            "source_partition": row["kafka_partition"], "source_offset": row["kafka_offset"],
            "source_timestamp": _iso(row["kafka_timestamp"]),
            "record_key": base64.b64encode(bytes(row["record_key"])).decode() if row["record_key"] is not None else None,
            "payload": base64.b64encode(bytes(payload)).decode() if payload is not None else None,
            "model_version": model_version,
        })

    def process_element(self, row: Any, ctx: KeyedProcessFunction.Context):
        import pandas as pd

        headers = row["kafka_headers"] or {}
        header = headers.get(SCHEMA_HEADER)
        frame = self._decoder.eval(pd.Series([row["payload"]], dtype=object), [header])
        error = frame.at[0, "error"]
        if error is not None:
            yield self._dead_letter(row, error)
            return
        if self._validator is not None:
            failed = self._validator.failures(frame)[0]
            if failed is not None:
                yield self._dead_letter(row, f"validation_failed: {failed}")
                return
        model = self.handle.current()
        self._version_info.set(model.version)
        x = frame[list(model.features.names)].to_numpy(dtype=np.float64, na_value=np.nan)
        score = float(model.score(x)[0])
        if np.isnan(score):
            yield self._dead_letter(row, "unscorable: no score", model.version)
            return
        self._scored.inc()
        anomalous = score > model.threshold
        record = {k: (_iso(v) if k == self._time else v) for k, v in frame.iloc[0].items() if k != "error"}
        record = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()}
        record.update(score=score, is_anomaly=bool(anomalous), model_version=model.version,
                      source_partition=row["kafka_partition"], source_offset=row["kafka_offset"])
        yield json.dumps(record)
        if anomalous:
            self._anomalies.inc()
            yield from self._track(record, frame.at[0, self._time])

    def _track(self, record: dict[str, Any], event_time: Any):
        """Keep this vehicle's anomalies inside the window; alert when there are alert_count of them."""
        now = int(pd_timestamp_ms(event_time))
        recent = [r for r in (self._recent.get() or []) if now - r["t"] <= self.alert_window_ms]
        recent.append({"t": now, "event_time": record[self._time], "score": record["score"],
                       "source_partition": record["source_partition"], "source_offset": record["source_offset"],
                       "label": record.get(self._label) if self._label else None})
        if len(recent) >= self.alert_count:
            self._alerts.inc()
            self._recent.clear()
            yield ALERTS, json.dumps({
                self._entity: record[self._entity], "anomalies": len(recent),
                "window_seconds": self.alert_window_ms / 1000,
                "first_event_time": recent[0]["event_time"], "last_event_time": recent[-1]["event_time"],
                "max_score": max(r["score"] for r in recent), "model_version": record["model_version"],
                "readings": [{k: r[k] for k in ("event_time", "score", "source_partition", "source_offset", "label")}
                             for r in recent],
            })
        else:
            self._recent.update(recent)


def pd_timestamp_ms(value: Any) -> int:
    import pandas as pd

    return int(pd.Timestamp(value).value // 1_000_000)


def build(raw: Table, settings: ScoreSettings, schema: dict[str, Any], suite: dict[str, Any] | None,
          alert_count: int, alert_window_s: float) -> tuple[DataStream, DataStream, DataStream]:
    """(scored, alerts, dead letters) JSON streams from a raw Kafka table (connectors.flink_kafka.raw_source)."""
    from udfs.anomaly_score import ModelHandle

    if alert_count < 1 or alert_window_s <= 0:
        raise ValueError(f"--alert-count must be >= 1 and --alert-window > 0, got {alert_count} and {alert_window_s}")
    t_env = raw._t_env
    rows = t_env.to_data_stream(raw)
    handle = ModelHandle(settings.model_store, settings.model_version,
                         refresh_seconds=settings.model_refresh_seconds, s3=settings.s3)
    scored = (rows.key_by(lambda r: bytes(r["record_key"] or b"").decode("utf-8", "replace"), key_type=Types.STRING())
              .process(ScoreVehicle(schema, settings.pseudonym_secret.get_secret_value().encode(), suite, handle,
                                    settings.input_topic, alert_count, alert_window_s), output_type=Types.STRING())
              .name("score-per-vehicle").uid("score-per-vehicle"))
    return scored, scored.get_side_output(ALERTS), scored.get_side_output(DLQ)


def main(argv: list[str] | None = None) -> int:
    parser = ScoreSettings.parser("python -m jobs.score_events_stream", __doc__)
    parser.add_argument("--alert-count", type=int, default=3, help="anomalous readings that make an alert")
    parser.add_argument("--alert-window", type=float, default=60.0, help="seconds of event time")
    try:
        settings, extras = ScoreSettings.parse(parser, argv)
        settings = settings.model_copy(update={
            "scored_topic": settings.scored_topic or f"{settings.input_topic}.stream.scored",
            "alerts_topic": settings.alerts_topic or f"{settings.input_topic}.stream.alerts",
            "dlq_topic": settings.dlq_topic or f"{settings.input_topic}.stream.dlq",
            "group_id": settings.group_id if settings.group_id != "vigil-score-events" else "vigil-score-events-stream",
        })
        schema, manifest, suite = prepare(settings)
        flink_home.activate(StackSettings.from_env())
    except (ConnectorError, SchemaError, ModelStoreError, flink_home.FlinkHomeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from jobs.flink_env import stream_table_environment

    env, t_env = stream_table_environment(parallelism__default=settings.parallelism,
                                          execution__checkpointing__interval=settings.checkpoint_interval)
    raw = t_env.from_descriptor(flink_kafka.raw_source(
        settings.input_topic, settings.bootstrap_servers, group_id=settings.group_id, bounded=settings.bounded))
    scored, alerts, dead = build(raw, settings, schema, suite, extras['alert_count'], extras['alert_window'])
    topics = settings.topics
    prefix = f"{settings.group_id}-{settings.input_topic}"
    for name, stream in (("scored", scored), ("alerts", alerts), ("dlq", dead)):
        stream.sink_to(flink_kafka.string_stream_sink(topics[name], settings.bootstrap_servers, exactly_once=True,
                                                      transactional_prefix=f"{prefix}-{name}")) \
            .name(f"{name}-to-kafka").uid(f"{name}-to-kafka")
    started = time.monotonic()
    client = env.execute_async(f"vigil-score-events-stream:{settings.input_topic}")
    print(f"submitted job {client.get_job_id()}: {settings.input_topic} -> {', '.join(topics.values())} "
          f"(model {manifest['version']}, alert on {extras['alert_count']} anomalies in {extras['alert_window']:g}s)",
          flush=True)
    client.get_job_execution_result().result()
    if settings.bounded:
        print(f"job {client.get_job_id()} finished in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
