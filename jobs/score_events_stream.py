"""Score every event through the DataStream API, keyed by entity, with per-entity alert state.

    python -m jobs.score_events_stream --input telemetry [--alert-count 3 --alert-window 60] [--bounded]

Each record is decoded, pseudonymised, checked (impossible values and the expectation suite) and
scored with the same parts as the Table job, inside one keyed operator (udfs/score_per_entity).
What the Table job cannot express simply lives in keyed state: an alert is raised only when an
entity produces --alert-count anomalous readings within --alert-window seconds of event time
(udfs/alert_rules.KInWindow), and it carries those readings. One alert per burst.

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
from udfs.alert_rules import KInWindow
from vigil.commands import command, option
from vigil.settings import VigilSettings

JOB = "score-events-stream"


class StreamScoreOptions(scoring.ScoreOptions):
    scored_topic: str | None = option(None, "topic for every scored event", show_default="<input>.stream.scored")
    alerts_topic: str | None = option(None, "topic for alerts", show_default="<input>.stream.alerts")
    dlq_topic: str | None = option(None, "topic for dead letters", show_default="<input>.stream.dlq")
    alert_count: int = option(KInWindow.count, "anomalous readings of one entity that make an alert", ge=1)
    alert_window: float = option(KInWindow.window_seconds, "seconds of event time they must fall within", gt=0)


def run(settings: VigilSettings, options: StreamScoreOptions) -> int:
    rule = KInWindow(options.alert_count, options.alert_window)
    plan = scoring.plan(settings, options, job=JOB, topic_infix=".stream", tier=False)
    return execute(settings, plan, lambda raw: scoring_stream.build(raw, plan, rule),
                   f"model {plan.manifest['version']}, alert on {rule.count} anomalies in {rule.window_seconds:g}s")


COMMAND = command(JOB, __doc__, run, options=StreamScoreOptions, settings_flags=scoring.SCORE_SETTINGS_FLAGS,
                  expected_errors=(ConnectorError, flink_home.FlinkHomeError, ValueError),
                  prog="python -m jobs.score_events_stream")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
