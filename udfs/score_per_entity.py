"""The DataStream job's keyed operator, and the episode builder both jobs raise alerts with.

``ScorePerEntity`` is the DataStream job's one operator (keyed by the Kafka record key: the
entity id). Per record it does what the Table job does per batch, with the same parts
(DecodeTelemetry, SuiteValidator, ModelHandle, the feature set's temporal context) and the same
routing; it emits rows of the record contract (connectors/records.py): scored rows on the main
output, alerts and dead letters on side outputs. Its keyed state holds the entity's last
readings (the model's temporal context, as the Table job's LAG over an OVER window), its recent
anomaly flags and its alarm episode (udfs/alert_rules.Hysteresis, a pure function).

``BuildEpisodes`` is the Table job's alert step: keyed by entity, it gets only the readings at
which an alarm can change (the facts computed in Java) and keeps the episode in keyed state.

Scoring in ScorePerEntity is per record (the DataStream API has no vectorized Python
functions): this path trades throughput for per-entity logic in one place; the Table job is the
high-throughput path.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from pyflink.common import Row
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext

from connectors.avro_serde import SCHEMA_HEADER, roles
from connectors.records import Outputs
from udfs.alert_rules import CALM, Hysteresis, Reading
from udfs.anomaly_score import NO_MODEL
from udfs.dead_letters import payload_key, seal


def alert_row(event: dict[str, Any], entity: str, outputs: Outputs) -> Row:
    """An alert-contract row of a Hysteresis event."""
    values = dict(event)
    values[outputs.entity] = entity
    if outputs.time:
        values[outputs.time] = event["event_time"]
    if outputs.label:
        values[outputs.label] = event["label"]
    values["readings"] = [Row(*[r[f] for f in ("event_time", "score", "source_partition", "source_offset",
                                               "label")]) for r in event["readings"]]
    return Row(*[values.get(n) for n in outputs.alerts.names])


def _state(runtime_context: RuntimeContext, name: str) -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return runtime_context.get_state(ValueStateDescriptor(name, Types.PICKLED_BYTE_ARRAY()))


class BuildEpisodes(KeyedProcessFunction):
    """Table job: alarm episodes from the readings at which they can change (see the module docstring)."""

    def __init__(self, rule: Hysteresis, outputs: Outputs) -> None:
        self.rule = rule
        self.outputs = outputs

    def open(self, runtime_context: RuntimeContext) -> None:
        from udfs import metrics

        self._episode = _state(runtime_context, "episode")
        self._alerts = metrics.counter(runtime_context.get_metrics_group().add_group("vigil"), "alerts")

    def process_element(self, row: Any, ctx: KeyedProcessFunction.Context):
        reading = Reading(_naive_utc(row["event_time"]), float(row["score"]), row["source_partition"],
                          row["source_offset"], row["label"], row["model_version"])
        state, events = self.rule.step(self._episode.value() or CALM, reading, bool(row["anomalous"]),
                                       int(row["count"]), bool(row["quiet"]), row["entity"])
        self._episode.update(state)
        for event in events:
            self._alerts.inc()
            yield alert_row(event, row["entity"], self.outputs)


def _naive_utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


class ScorePerEntity(KeyedProcessFunction):
    """See the module docstring. Constructor state is plain and picklable (no secret, no model)."""

    def __init__(self, schema: dict[str, Any], outputs: Outputs, secret_file: str | None,
                 suite: dict[str, Any] | None, handle: Any, source_topic: str, rule: Hysteresis, context: int,
                 alerts_tag: OutputTag, dlq_tag: OutputTag) -> None:
        self.schema = schema
        self.outputs = outputs
        self.secret_file = secret_file
        self.suite = suite
        self.handle = handle
        self.source_topic = source_topic
        self.rule = rule
        self.context = context
        self.alerts_tag = alerts_tag
        self.dlq_tag = dlq_tag

    def __repr__(self) -> str:
        return f"ScorePerEntity(topic={self.source_topic!r})"

    def open(self, runtime_context: RuntimeContext) -> None:
        from udfs import metrics
        from udfs.preprocess import DecodeTelemetry

        self._decoder = DecodeTelemetry(self.schema, self.secret_file)
        self._decoder.open(None)
        self._aes = payload_key(self._decoder._secret)
        self._validator = None
        if self.suite is not None:
            from udfs.validate_features import SuiteValidator

            self._validator = SuiteValidator(self.suite)
        group = runtime_context.get_metrics_group().add_group("vigil")
        self.handle.open(runtime_context.get_job_parameter, group)
        role = roles(self.schema)
        self._time, self._label = role["time"], role["label"]
        self._history = _state(runtime_context, "readings")   # the last context - 1 readings, newest first
        self._flags = _state(runtime_context, "flags")        # the last rule.lags anomaly flags, newest first
        self._episode = _state(runtime_context, "episode")
        self._scored = group.counter("events_scored")
        self._anomalies = group.counter("anomalies")
        self._dead = group.counter("dead_letters")
        self._alerts = group.counter("alerts")
        self._version_info = metrics.ModelVersionInfo(group)
        self._scored_names = self.outputs.scored_base.names  # derived features follow in SQL (jobs/core)

    def _dead_letter(self, row: Any, reason: str, model_version: str | None = None) -> tuple[OutputTag, Row]:
        self._dead.inc()
        values = {"reason": reason, "stage": reason.split(":", 1)[0], "source_topic": self.source_topic,
                  "source_partition": row["kafka_partition"], "source_offset": row["kafka_offset"],
                  "source_timestamp": row["kafka_timestamp"], "model_version": model_version,
                  **seal(self._decoder._secret, row["record_key"], row["payload"], aes_key=self._aes)}
        return self.dlq_tag, Row(*[values[n] for n in self.outputs.dead_letters.names])

    def _context(self, frame: Any, row: Any, features: list[str]) -> Any:
        """This reading's context (as the Table job's LAGs: decodable readings of the entity, newest first),
        and the entity's history updated with it."""
        from udfs.feature_set import Context, time_millis_any

        current = frame[features].to_numpy(dtype=np.float64, na_value=np.nan)[0]
        stamp = frame[self._time].iloc[0] if self._time else row["kafka_timestamp"]
        now = float(time_millis_any([stamp])[0])
        history = self._history.value() or []
        readings = [(current, now)] + history
        if self.context > 1:
            self._history.update(readings[:self.context - 1])
        values = np.full((1, self.context, len(features)), np.nan)
        times = np.full((1, self.context), np.nan)
        for k, (vals, millis) in enumerate(readings[:self.context]):
            values[0, k], times[0, k] = vals, millis
        times[0, 0] = 0.0 if np.isnan(times[0, 0]) else times[0, 0]
        return Context(values, times)

    def process_element(self, row: Any, ctx: KeyedProcessFunction.Context):
        import pandas as pd

        header = (row["kafka_headers"] or {}).get(SCHEMA_HEADER)
        frame = self._decoder.eval(pd.Series([row["payload"]], dtype=object), [header])
        error = frame.at[0, "error"]
        if error is not None:
            yield self._dead_letter(row, error)
            return
        context = self._context(frame, row, self.handle.features)
        if self._validator is not None:
            failed = self._validator.failures(frame)[0]
            if failed is not None:
                yield self._dead_letter(row, f"validation_failed: {failed}")
                return
        model = self.handle.current()
        if model is None:
            yield self._dead_letter(row, "unscorable: no usable model (see the job log)", NO_MODEL)
            return
        self._version_info.set(model.version)
        entity = frame[self.outputs.entity].tolist() if self.outputs.entity in frame else None
        scores, flags, status = model.score_context(context.head(model.window), entity)
        score = float(scores[0])
        if np.isnan(score):
            yield self._dead_letter(row, f"unscorable: {status.note[0] or 'no score'}", model.version)
            return
        self._scored.inc()
        anomalous = bool(flags[0])
        record = {k: (None if isinstance(v, float) and np.isnan(v) else v)
                  for k, v in frame.iloc[0].items() if k != "error"}
        if self._time:
            record[self._time] = _naive_utc(record[self._time])
        record.update(score=score, is_anomaly=anomalous, model_version=model.version, partial=status.note[0],
                      source_partition=row["kafka_partition"], source_offset=row["kafka_offset"])
        yield Row(*[record.get(n) for n in self._scored_names])
        if anomalous:
            self._anomalies.inc()
        yield from self._track(record, anomalous)

    def _track(self, record: dict[str, Any], anomalous: bool):
        history = [anomalous] + (self._flags.value() or [])
        self._flags.update(history[:self.rule.lags])
        count, quiet = self.rule.facts(history)
        reading = Reading(record[self._time] if self._time else None, record["score"], record["source_partition"],
                          record["source_offset"], record.get(self._label) if self._label else None,
                          record["model_version"])
        entity = record[self.outputs.entity]
        state, events = self.rule.step(self._episode.value() or CALM, reading, anomalous, count, quiet, entity)
        self._episode.update(state)
        for event in events:
            self._alerts.inc()
            yield self.alerts_tag, alert_row(event, entity, self.outputs)
