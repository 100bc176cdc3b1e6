"""Score a time range of a topic again, into separate topics: the scoring half of a replay.

    vigil backfill --input telemetry --since 2026-01-01T00:00:00Z --until 2026-01-02T00:00:00Z \\
        --model telemetry@challenger

Runs the Table scoring job (jobs/score_events.py) bounded, from the first record at --since to the
first at --until (or the end of the topic as it is now), with its own consumer group and its own
outputs (``<prefix>.scored``, ``.alerts``, ``.dlq``; no Parquet tier unless --tier is given), so the
live job's outputs and committed offsets are never touched.
"""
from __future__ import annotations

from connectors.errors import ConnectorError
from jobs import score_events
from jobs.core.scoring import _iso_millis
from stack import flink_home
from vigil.commands import Options, command, option
from vigil.settings import VigilSettings


class BackfillOptions(Options):
    input_topic: str = option(..., "topic to score again", flag="--input")
    since: str = option(..., "first event to score: the first record at or after this time (ISO 8601)",
                        parse=_iso_millis)
    until: str | None = option(None, "stop at the first record at or after this time (ISO 8601)", parse=_iso_millis,
                               show_default="the end of the topic as it is now")
    prefix: str | None = option(None, "output topics: <prefix>.scored, .alerts, .dlq",
                                show_default="<input>.backfill")
    model: str | None = option(None, "model: name@alias or name@N", show_default="<input>@champion")
    tier: str | None = option(None, "a Parquet tier for the backfill (file:///path or s3a://bucket/prefix)",
                              show_default="none: the live tier is not written twice")


def run(settings: VigilSettings, o: BackfillOptions) -> int:
    prefix = o.prefix or f"{o.input_topic}.backfill"
    settings = settings.evolve(tier=o.tier or "none")
    options = score_events.TableScoreOptions(
        input_topic=o.input_topic, model=o.model, from_timestamp=o.since, until=o.until, bounded=o.until is None,
        scored_topic=f"{prefix}.scored", alerts_topic=f"{prefix}.alerts", dlq_topic=f"{prefix}.dlq",
        group_id=f"vigil-backfill-{prefix}")
    return score_events.run(settings, options)


COMMAND = command("backfill", __doc__, run, options=BackfillOptions,
                  settings_flags=("kafka.bootstrap_servers", "model.store", "pseudonym.secret_file"),
                  expected_errors=(ConnectorError, flink_home.FlinkHomeError, ValueError), prog="vigil backfill")
