"""Events/s of every stage of the scoring pipeline, side by side on one machine, and event-to-alert latency.

    python -m benchmarks.pipeline [--smoke | --quick] [--events N] [--out .vigil/benchmarks]

Variants, all measured in one run against the local Kafka broker (see benchmarks/README.md):

* ``a-produce`` / ``a-consume``: confluent-kafka producing N pre-serialised Avro records, then
  consuming them all (the Python-client ceiling of the broker on this machine);
* ``b-raw``: Flink Kafka -> Kafka copying the raw bytes (no format, no Python);
* ``b``: Flink Kafka (Avro, decoded in Java) -> Kafka JSON, no Python;
* ``c``: ``b`` plus a no-op pandas UDF on the 17 features (the Python boundary alone);
* ``d``: ``b`` plus ANOMALY on the 17 features (the model's cost inside Flink);
* ``e``: ``d`` plus the compiled telemetry-v1 expectation suite (validate_udf);
* ``d-full`` / ``e-full``: the real scoring job (``jobs.core.scoring.build``: Python decode and
  pseudonymisation, scoring, routing to scored/alerts/dlq) without / with the suite;
* ``d-full-jvm`` / ``e-full-jvm``: the same with the decode on the JVM (``--decode jvm``, the
  job's default), also with ``--profile low-latency`` and (full mode) at parallelism 2;
* ``a-stage`` / ``b-stage``: one stage of decode + validate + score, fused in one pandas UDF (a)
  or decoded on the JVM first (b), one JSON row per record, no routing;
* ``f``: a hand-rolled Python consumer: batch consume, fastavro decode, numpy autoencoder,
  batch produce of JSON results;
* ``g``: the numpy scorer alone on a ready float32 matrix.

Flink variants run bounded (``scan.bounded.mode=latest-offset``) on input topics pre-filled
once, at N and at 2N events. Each gets three rates: wall (submission to finish), marginal
N / (t(2N) - t(N)) (fixed start-up cost removed) and output-span (the pace of the 2N run's output
records by their Kafka timestamps), the headline (see METHOD). Latency is measured on
an unbounded run of the real job at half its measured capacity: alert's Kafka timestamp (the sink's write time)
minus the input record's Kafka timestamp (stamped with wall-clock time at produce).

Goals are reported, never asserted. Writes ``pipeline.json`` and ``pipeline.md`` to ``--out``.
"""
from benchmarks.pipeline.run import main
from benchmarks.pipeline.settings import GOALS

__all__ = ["GOALS", "main"]

from benchmarks.pipeline.run import COMMAND  # noqa: E402

COMMAND.doc = __doc__  # --help shows the whole story above
