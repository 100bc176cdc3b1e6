"""Score every event of a topic with the autoencoder inside Flink (Table API): the main job.

    python -m jobs.score_events --input telemetry [--bounded] [--tier s3a://vigil/tier]

Kafka (raw bytes) -> decode + pseudonymise -> validate against the expectation suite ->
ANOMALY(...) -> one statement set with four sinks, all exactly-once (Kafka transactions and
Parquet files commit on checkpoints):

* <input>.scored   every valid event with its score, flag and the model version that scored it;
* <input>.alerts   the anomalous ones, one alert per anomalous reading;
* <input>.dlq      every record that could not be scored: reason, source topic/partition/offset,
                   original bytes;
* the object tier  every scored event as Parquet by event date and hour (--tier; 'none' disables).

Each output's fields are the record contract's (connectors/records.py). A bad record never fails
the job and never disappears: each input record ends up in exactly one of scored or dlq.
"""
from __future__ import annotations

import sys
import time

from connectors import flink_kafka
from connectors.errors import ConnectorError
from jobs.core import scoring, sinks
from jobs.core.flink_env import checkpointing, detached, recovery
from stack import flink_home
from vigil.commands import command
from vigil.settings import VigilSettings

JOB = "score-events"


def run(settings: VigilSettings, options: scoring.ScoreOptions) -> int:
    plan = scoring.plan(settings, options, job=JOB)
    flink_home.activate(settings)
    from jobs.core.flink_env import stream_table_environment

    _, t_env = stream_table_environment(parallelism__default=plan.parallelism,
                                        pipeline__name=f"vigil-{JOB}:{plan.input_topic}",
                                        **checkpointing(plan), **recovery(plan))
    raw = t_env.from_descriptor(flink_kafka.raw_source(plan.input_topic, plan.bootstrap_servers,
                                                       group_id=plan.group_id, bounded=plan.bounded,
                                                       start=plan.start, until_ms=plan.until_ms))
    statements = t_env.create_statement_set()
    sinks.attach(statements, scoring.build(raw, plan), plan)
    started = time.monotonic()
    result = statements.execute()
    job_id = result.get_job_client().get_job_id()
    print(f"submitted job {job_id}: {plan.input_topic} -> {', '.join(plan.topics.values())}"
          f"{', ' + plan.tier if plan.tier else ''} (model {plan.manifest['version']} from {plan.model_store})",
          flush=True)
    if detached(t_env):  # flink run -d: the job runs on in the cluster, the client is done
        return 0
    result.wait()
    if plan.bounded:
        print(f"job {job_id} finished in {time.monotonic() - started:.1f}s", flush=True)
    return 0


COMMAND = command(JOB, __doc__, run, options=scoring.ScoreOptions, settings_flags=scoring.SCORE_SETTINGS_FLAGS,
                  expected_errors=(ConnectorError, flink_home.FlinkHomeError, ValueError),
                  prog="python -m jobs.score_events")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
