"""What a pipeline benchmark run measures: sizes per mode, the knob sweep, goals, ratios."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- sizes and goals ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchSettings:
    """What one run measures. ``events`` is N: every Flink variant runs at N and at 2N events."""

    mode: str
    events: int
    unique_events: int               # distinct simulated records; the topic repeats them
    latency_seconds: float           # measured window of each latency run
    sweep: bool                      # try Python UDF knob settings for (d)
    exactly_once_latency: bool       # also measure latency with exactly-once sinks
    bundle_time_latency: bool        # also measure latency with python bundle.time = 100 ms
    parallelism2: bool               # also run (d) at parallelism 2
    jvm_latency: bool                # also measure the latency of the JVM-decode job (e-full-jvm)
    bootstrap_servers: str
    out: Path
    keep_topics: bool = False
    failure_rate: float = 0.05       # share of simulated readings inside a failure episode
    decode_jar: str = ""             # VIGIL_DECODE's jar (jobs.core.jvm_decode.jar_path) for the -jvm variants

    def __post_init__(self) -> None:
        if self.events < 100:
            raise ValueError(f"events must be >= 100, got {self.events}")
        if self.latency_seconds <= 0:
            raise ValueError(f"latency_seconds must be > 0, got {self.latency_seconds}")


MODES: dict[str, dict[str, Any]] = {
    # CI smoke test: every variant once, no knob sweep; figures are noise at this size.
    "smoke": {"events": 3_000, "unique_events": 3_000, "latency_seconds": 4.0, "sweep": False,
              "exactly_once_latency": False, "bundle_time_latency": False, "parallelism2": False,
              "jvm_latency": True},
    # A few minutes: indicative figures, one knob setting (the configured one).
    "quick": {"events": 30_000, "unique_events": 20_000, "latency_seconds": 8.0, "sweep": False,
              "exactly_once_latency": False, "bundle_time_latency": False, "parallelism2": False,
              "jvm_latency": True},
    # ~16 minutes on 2 cores: the figures to quote.
    "full": {"events": 200_000, "unique_events": 50_000, "latency_seconds": 25.0, "sweep": True,
             "exactly_once_latency": True, "bundle_time_latency": True, "parallelism2": True,
             "jvm_latency": True},
}

# (arrow batch size, bundle size, bundle time ms) tried for (d) in full mode.
SWEEP: list[tuple[int, int, int]] = [
    (1_000, 100_000, 100), (1_000, 100_000, 1_000),
    (10_000, 100_000, 100), (10_000, 100_000, 1_000),
    (50_000, 100_000, 100), (50_000, 100_000, 1_000),
]
KNOB_KEYS = ("python.fn-execution.arrow.batch.size", "python.fn-execution.bundle.size",
             "python.fn-execution.bundle.time")

GOALS: list[tuple[str, str, float, str]] = [
    # (label, measured key, target, comparison)
    ("(d) events/s", "d", 150_000, ">="),
    ("(d)/(c)", "d/c", 0.8, ">="),
    ("(d)/(f)", "d/f", 1.0, ">="),
    ("(e)/(d)", "e/d", 0.9, ">="),
    ("event-to-alert p99 ms at half load", "latency_p99_ms", 200, "<="),
    # issue 13: the real job against Flink's own Avro pass-through and a hand-rolled consumer, per candidate
    ("real job, JVM decode (e-full-jvm)/(b)", "e-full-jvm/b", 0.8, ">="),
    ("real job, JVM decode (e-full-jvm)/(f)", "e-full-jvm/f", 2.0, ">="),
    ("real job, Python decode (e-full)/(b)", "e-full/b", 0.8, ">="),
    ("real job, Python decode (e-full)/(f)", "e-full/f", 2.0, ">="),
    ("low-latency profile: event-to-alert p99 ms at half its load, at-least-once", "low_latency_p99_ms", 200, "<="),
    ("low-latency profile, exactly-once: visible p99 ms beyond the checkpoint interval",
     "low_latency_eo_visible_p99_over_interval_ms", 1000, "<="),
]
RATIOS: list[tuple[str, str]] = [("d", "c"), ("d", "f"), ("c", "b"), ("e", "d"), ("g", "d"),
                                 ("d-full", "d"), ("e-full", "d-full"), ("b", "a-consume"),
                                 ("e-full", "b"), ("e-full", "f"), ("e-full-jvm", "b"), ("e-full-jvm", "f"),
                                 ("e-full-jvm", "e-full"), ("e-full-jvm", "e"), ("d-full-jvm", "d"),
                                 ("b-stage", "a-stage"), ("b-stage", "e"), ("e-full-jvm", "b-stage"),
                                 ("e-full-jvm/low-latency", "e-full-jvm"), ("e-full-jvm@p2", "e-full-jvm"),
                                 ("e-full-jvm/avro", "e-full-jvm"), ("e-full-jvm", "e-full-jvm/unbatched"),
                                 ("d@p2", "d")]

DESCRIPTIONS = {
    "a-produce": "confluent-kafka produce, pre-serialised Avro (idempotent, acks=all, lz4)",
    "a-consume": "confluent-kafka consume(num_messages=10000), no decode",
    "b-raw": "Flink raw bytes -> raw bytes, no Python",
    "b": "Flink Avro (Java decode) -> JSON, no Python",
    "c": "(b) + no-op pandas UDF on the 17 features",
    "d": "(b) + ANOMALY pandas UDF on the 17 features",
    "e": "(d) + VALIDATE (compiled telemetry-v1 suite)",
    "d-full": "score_events.build, no suite: Python decode + ANOMALY -> scored/alerts/dlq",
    "e-full": "score_events.build with the suite (the real job, at-least-once sinks, no Parquet tier)",
    "d-full-jvm": "d-full with the decode on the JVM (VIGIL_DECODE): one Python stage, ANOMALY",
    "e-full-jvm": "the real job with the decode on the JVM (VIGIL_DECODE, candidate b): one Python stage, "
                  "VALIDATE + ANOMALY",
    "a-stage": "candidate a: decode + VALIDATE + ANOMALY fused in one pandas UDF on the raw payload, one JSON "
               "row per record (benchmark prototype, no routing)",
    "b-stage": "candidate b: VIGIL_DECODE (JVM), then VALIDATE + ANOMALY in one Python stage, one JSON row per "
               "record (no routing)",
    "e-full-jvm/avro": "e-full-jvm with the scored topic in Flink's avro format instead of JSON (alerts and "
                       "dead letters JSON)",
    "e-full-jvm/unbatched": "e-full-jvm with the Kafka producers' own batching (no linger.ms / batch.size of "
                            "the throughput profile)",
    "f": "hand-rolled Python: consume batch, fastavro, numpy model, produce JSON",
    "g": "NumpyScorer.score on a ready float32 matrix (10k rows)",
}
