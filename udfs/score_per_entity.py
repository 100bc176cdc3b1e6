"""Decode, validate and score one entity's readings, and run the alert rule on its keyed state.

``ScorePerEntity`` is the DataStream job's one operator (keyed by the Kafka record key: the
entity id). Per record it does what the Table job does per batch, with the same parts
(DecodeTelemetry, SuiteValidator, ModelHandle) and the same routing; it emits rows of the record
contract (connectors/records.py): scored rows on the main output, alerts and dead letters on
side outputs. The alert rule is a pure function (udfs/alert_rules.py); this operator only keeps
the rule's state (the entity's recent anomalies) in Flink's keyed state.

Scoring here is per record (the DataStream API has no vectorized Python functions): this path
trades throughput for per-entity state; the Table job is the high-throughput path.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from pyflink.common import Row
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext

from connectors.avro_serde import SCHEMA_HEADER, roles
from connectors.records import Outputs
from udfs.alert_rules import KInWindow, Reading
from udfs.anomaly_score import NO_MODEL
from udfs.dead_letters import payload_key, seal


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
                 suite: dict[str, Any] | None, handle: Any, source_topic: str, rule: KInWindow,
                 alerts_tag: OutputTag, dlq_tag: OutputTag) -> None:
        self.schema = schema
        self.outputs = outputs
        self.secret_file = secret_file
        self.suite = suite
        self.handle = handle
        self.source_topic = source_topic
        self.rule = rule
        self.alerts_tag = alerts_tag
        self.dlq_tag = dlq_tag

    def __repr__(self) -> str:
        return f"ScorePerEntity(topic={self.source_topic!r})"

    def open(self, runtime_context: RuntimeContext) -> None:
        from pyflink.common import Time, Types
        from pyflink.datastream.state import ListStateDescriptor, StateTtlConfig

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
        ttl_ms = max(int(self.rule.window_seconds * 1000) * 10, 60_000)
        descriptor = ListStateDescriptor("recent_anomalies", Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(StateTtlConfig.new_builder(Time.milliseconds(ttl_ms)).build())
        self._recent = runtime_context.get_list_state(descriptor)
        self._scored = group.counter("events_scored")
        self._anomalies = group.counter("anomalies")
        self._dead = group.counter("dead_letters")
        self._alerts = group.counter("alerts")
        self._version_info = metrics.ModelVersionInfo(group)
        self._scored_names = self.outputs.scored_base.names  # derived features follow in SQL (jobs/core)
        self._alert_names = self.outputs.alerts.names

    def _dead_letter(self, row: Any, reason: str, model_version: str | None = None) -> tuple[OutputTag, Row]:
        self._dead.inc()
        values = {"reason": reason, "stage": reason.split(":", 1)[0], "source_topic": self.source_topic,
                  "source_partition": row["kafka_partition"], "source_offset": row["kafka_offset"],
                  "source_timestamp": row["kafka_timestamp"], "model_version": model_version,
                  **seal(self._decoder._secret, row["record_key"], row["payload"], aes_key=self._aes)}
        return self.dlq_tag, Row(*[values[n] for n in self.outputs.dead_letters.names])

    def process_element(self, row: Any, ctx: KeyedProcessFunction.Context):
        import pandas as pd

        header = (row["kafka_headers"] or {}).get(SCHEMA_HEADER)
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
        if model is None:
            yield self._dead_letter(row, "unscorable: no usable model (see the job log)", NO_MODEL)
            return
        self._version_info.set(model.version)
        x = frame[list(model.features.names)].to_numpy(dtype=np.float64, na_value=np.nan)
        score = float(model.score(x)[0])
        if np.isnan(score):
            yield self._dead_letter(row, "unscorable: no score", model.version)
            return
        self._scored.inc()
        anomalous = bool(score > model.threshold)
        record = {k: (None if isinstance(v, float) and np.isnan(v) else v)
                  for k, v in frame.iloc[0].items() if k != "error"}
        if self._time:
            record[self._time] = _naive_utc(record[self._time])
        record.update(score=score, is_anomaly=anomalous,
                      model_version=model.version, source_partition=row["kafka_partition"],
                      source_offset=row["kafka_offset"])
        yield Row(*[record.get(n) for n in self._scored_names])
        if anomalous:
            self._anomalies.inc()
            yield from self._track(record)

    def _track(self, record: dict[str, Any]):
        reading = Reading(record[self._time], record["score"], record["source_partition"], record["source_offset"],
                          record.get(self._label) if self._label else None)
        state, alert = self.rule.step(tuple(self._recent.get() or ()), reading)
        if alert is None:
            self._recent.update(list(state))
            return
        self._recent.clear()
        self._alerts.inc()
        alert.update({self.outputs.entity: record[self.outputs.entity], "model_version": record["model_version"]})
        if self._time:
            alert[self._time] = alert["event_time"]
        if self._label:
            alert[self._label] = alert["label"]
        alert["readings"] = [Row(*[r[f] for f in ("event_time", "score", "source_partition", "source_offset",
                                                  "label")]) for r in alert["readings"]]
        yield self.alerts_tag, Row(*[alert[n] for n in self._alert_names])

