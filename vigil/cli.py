"""vigil: real-time anomaly detection for sensor fleets on Kafka and Flink, on the command line.

    vigil stack up                      # start Kafka, the S3 server (and mosquitto) on loopback
    vigil simulate --topic telemetry    # a simulated fleet into Kafka, or your own data:
    vigil replay readings.csv --topic plant-a
    vigil train --topic plant-a         # straight from the Kafka log, into the model registry
    vigil score table --input plant-a   # the Flink job: scored, alerts, dead letters, Parquet tier
    vigil models list                   # versions, aliases (champion/challenger), history
    vigil monitor --scored plant-a.scored   # per-minute metrics, drift, accuracy to plant-a.metrics
    vigil retrain --topic plant-a       # train a challenger, evaluate it, promote it by a policy
    vigil dlq plant-a.dlq --open        # why records were refused, and what they were

Every sub-command's --help lists each option with its default. Settings (addresses, the model
store, the tier, secrets) come from flags, VIGIL_* variables or --config (vigil/settings.py).
The same commands also run as python -m jobs.<name>, python -m stack, python -m connectors.<name>.
"""
from __future__ import annotations

import sys

from vigil.commands import LazyGroup

SCORE = LazyGroup("score", "Score a topic with a model inside Flink: the Table job (fast), the DataStream job "
                           "(per-entity alert state) or a SQL script.", {
    "table": ("jobs.score_events:COMMAND", "the Table API job: decode, validate, ANOMALY, route (fast path)"),
    "stream": ("jobs.score_events_stream:COMMAND", "the DataStream job: per-entity K-in-window alerts"),
    "sql": ("jobs.run_sql:COMMAND", "the scoring job in Flink SQL (jobs/sql/) on the standalone cluster"),
}, prog="vigil score")

BENCH = LazyGroup("bench", "Benchmarks: they print figures, they never assert them (benchmarks/README.md).", {
    "pipeline": ("benchmarks.pipeline.run:COMMAND", "events/s of every pipeline stage side by side, and latency"),
    "score-function": ("benchmarks.score_function:COMMAND", "rows/s of the scoring function per engine"),
    "validation-cost": ("benchmarks.validation_cost:COMMAND", "rows/s of the expectation suite per engine"),
}, prog="vigil bench")

VIGIL = LazyGroup("vigil", __doc__, {
    "stack": ("stack.__main__:STACK", "the local services: setup, up, down, status, env, cluster"),
    "simulate": ("jobs.simulate_fleet:COMMAND", "simulate a fleet of vehicles into a Kafka topic"),
    "replay": ("jobs.replay_file:COMMAND", "replay a CSV or Parquet file of your machines into a topic"),
    "register": ("jobs.register_topic:COMMAND", "make a topic your producers write trainable: its schema and roles"),
    "train": ("jobs.train_autoencoder:COMMAND", "train a model from a topic's Kafka log into the registry"),
    "score": ("vigil.cli:SCORE", "score a topic inside Flink (table | stream | sql)"),
    "sql": ("jobs.sql_session:COMMAND", "the Flink SQL client: every topic a table, every model a function"),
    "backfill": ("vigil.backfill:COMMAND", "score a time range of a topic again, into separate topics"),
    "monitor": ("jobs.monitor:COMMAND", "per-minute model metrics, drift and accuracy of a scored topic, to Kafka"),
    "retrain": ("jobs.retrain:COMMAND", "the retraining loop: train a challenger, evaluate, promote by a policy"),
    "shadow": ("jobs.shadow:COMMAND", "compare the two models of a shadow-scoring run: agreement, alerts, accuracy"),
    "models": ("jobs.models:MODELS", "the model registry: list, show, history, alias, compare, delete"),
    "dlq": ("jobs.dead_letters:COMMAND", "read a dead-letter topic (and open its sealed payloads)"),
    "topics": ("connectors.topics:TOPICS", "Kafka topics: create, describe, delete, list, peek"),
    "mqtt": ("connectors.mqtt_bridge:COMMAND", "bridge MQTT devices into a Kafka topic"),
    "dashboard": ("jobs.dashboard:COMMAND", "a live local dashboard of a scored topic"),
    "demo": ("jobs.run_demo:COMMAND", "the whole story here: simulate, train, score, drift, retrain, summary"),
    "bench": ("vigil.cli:BENCH", "benchmarks (pipeline, score-function, validation-cost)"),
}, prog="vigil")


def main(argv: list[str] | None = None) -> int:
    return VIGIL.main(argv)


if __name__ == "__main__":
    sys.exit(main())
