"""Score every event of a topic with the autoencoder inside Flink (Table API): the main job.

    vigil score table --input telemetry [--bounded] [--tier s3a://vigil/tier]

Kafka (raw bytes) -> decode + pseudonymise -> validate against the expectation suite ->
ANOMALY(...) -> one statement set with four sinks, all exactly-once (Kafka transactions and
Parquet files commit on checkpoints):

* <input>.scored   every valid event with its score, flag and the model version that scored it;
* <input>.alerts   alarm episodes per entity: a record when one opens (--alarm-enter anomalous
                   readings among the last --alarm-within) and one when it closes (after
                   --alarm-clear normal readings in a row);
* <input>.dlq      every record that could not be scored: reason, source topic/partition/offset,
                   original bytes;
* the object tier  every scored event as Parquet by event date and hour (--tier; 'none' disables).
* <input>.shadow   with --shadow MODEL: every scored event with both models' score, flag and
                   version (alerts follow --model only; `vigil shadow` compares the two).

Each output's fields are the record contract's (connectors/records.py). A bad record never fails
the job and never disappears: each input record ends up in exactly one of scored or dlq.
"""
from __future__ import annotations

import sys
from typing import Literal

from connectors.errors import ConnectorError
from jobs.core import scoring
from jobs.core.execute import execute
from stack import flink_home
from vigil.commands import command, option
from vigil.settings import VigilSettings

JOB = "score-events"


class TableScoreOptions(scoring.JobOptions):
    """The scoring job's options, plus shadow scoring (the Table job only)."""

    shadow: str | None = option(None, "a second model (name@alias or name@N) that scores every event in shadow, "
                                      "beside --model: both scores to --shadow-topic; alerts follow --model only",
                                show_default="none")
    shadow_topic: str | None = option(None, "topic for both models' scores per event (with --shadow)",
                                      show_default="<input>.shadow")
    decode: Literal["jvm", "python"] = option(
        "jvm", "where records are decoded and pseudonymised: jvm (Vigil's Java function, built by make setup; "
               "validation and scoring are then the one Python stage) or python (a pandas UDF); both give the "
               "same outputs")


def run(settings: VigilSettings, options: TableScoreOptions) -> int:
    plan = scoring.plan(settings, options, job=JOB)
    return execute(settings, plan, lambda raw: scoring.build(raw, plan),
                   f"model {plan.manifest['version']} from {plan.model_store}")


COMMAND = command(JOB, __doc__, run, options=TableScoreOptions, settings_flags=scoring.SCORE_SETTINGS_FLAGS,
                  expected_errors=(ConnectorError, flink_home.FlinkHomeError, ValueError),
                  prog="python -m jobs.score_events")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
