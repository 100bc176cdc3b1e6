"""Score every event through the DataStream API, keyed by entity, with per-entity alert state.

    vigil score stream --input telemetry [--alarm-enter 3 --alarm-within 5] [--bounded]

Each record is decoded, pseudonymised, checked (impossible values and the expectation suite) and
scored with the same parts as the Table job, inside one keyed operator (udfs/score_per_entity)
whose keyed state holds everything per entity: the model's temporal context (the entity's last
readings), its recent anomaly flags and its alarm episode (udfs/alert_rules.Hysteresis: open
after --alarm-enter anomalous of --alarm-within readings, closed after --alarm-clear normal
ones; one open and one closed alert per episode), the same outputs as the Table job.

Outputs (exactly-once Kafka sinks, fields as in connectors/records.py): <input>.stream.scored,
<input>.stream.alerts and <input>.stream.dlq. Scoring here is per record (the DataStream API has
no vectorized Python functions): this job trades throughput for per-entity logic; jobs.score_events
is the high-throughput path.
"""
from __future__ import annotations

import sys

from connectors.errors import ConnectorError
from jobs.core import scoring, scoring_stream
from jobs.core.execute import execute
from stack import flink_home
from vigil.commands import command, option
from vigil.settings import VigilSettings

JOB = "score-events-stream"


class StreamScoreOptions(scoring.JobOptions):
    scored_topic: str | None = option(None, "topic for every scored event", show_default="<input>.stream.scored")
    alerts_topic: str | None = option(None, "topic for alerts", show_default="<input>.stream.alerts")
    dlq_topic: str | None = option(None, "topic for dead letters", show_default="<input>.stream.dlq")


def run(settings: VigilSettings, options: StreamScoreOptions) -> int:
    plan = scoring.plan(settings, options, job=JOB, topic_infix=".stream", tier=False)
    return execute(settings, plan, lambda raw: scoring_stream.build(raw, plan),
                   f"model {plan.manifest['version']}, {plan.alarm.describe()}")


COMMAND = command(JOB, __doc__, run, options=StreamScoreOptions, settings_flags=scoring.SCORE_SETTINGS_FLAGS,
                  expected_errors=(ConnectorError, flink_home.FlinkHomeError, ValueError),
                  prog="python -m jobs.score_events_stream")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
