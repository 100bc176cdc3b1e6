"""One pipeline benchmark run: every variant, the ratios, the goals, latency; writes JSON and markdown."""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.pipeline.kafka_tools import Corpus, make_corpus, produce_all
from benchmarks.pipeline.report import METHOD, fmt, markdown
from benchmarks.pipeline.settings import (
    DESCRIPTIONS,
    GOALS,
    KNOB_KEYS,
    MODES,
    RATIOS,
    SWEEP,
    BenchSettings,
)
from benchmarks.pipeline.variants import (
    SINK_VARIANTS,
    FlinkBench,
    consume_rate,
    hand_rolled,
    make_model,
    model_alone,
)
from connectors.errors import ConnectorError
from jobs.core.scoring import PRODUCER_PROFILES, PROFILES
from vigil.commands import Options, OptionsError, command, option
from vigil.settings import VigilSettings

# the scoring jobs' --profile low-latency: its Flink configuration and its sinks' producer properties
LOW_LATENCY, LOW_LATENCY_PRODUCER = PROFILES["low-latency"], PRODUCER_PROFILES["low-latency"]

# --- the run ---------------------------------------------------------------------------------------

@dataclass
class Variant:
    """One row of the results: events/s by every method that applies, and the one used for ratios."""

    name: str
    description: str
    events: int | None = None
    seconds_n: float | None = None
    seconds_2n: float | None = None
    wall_rate: float | None = None       # 2N / seconds_2n: submission to finish, nothing subtracted
    marginal_rate: float | None = None   # N / (seconds_2n - seconds_n): fixed costs removed
    span_rate: float | None = None       # 5th..95th percentile of the 2N run's output timestamps
    rate: float = 0.0
    method: str = ""
    knobs: dict[str, str] = field(default_factory=dict)
    parallelism: int = 1

    def settle(self) -> Variant:
        """Pick the headline rate: output-span when measurable, else marginal, else wall.

        Span comes first because it is measured inside one run: on a shared 2-core machine the
        start of a job (submission, Python worker, TensorFlow import) varies by seconds from run
        to run, which the marginal rate takes as processing time unless N takes far longer.
        """
        if self.marginal_rate is None and self.seconds_2n is not None:
            self.wall_rate = 2 * self.events / self.seconds_2n
            if self.seconds_n is not None and self.seconds_2n > self.seconds_n:
                self.marginal_rate = self.events / (self.seconds_2n - self.seconds_n)
        for method in ("span_rate", "marginal_rate", "wall_rate"):
            if getattr(self, method):
                self.rate, self.method = getattr(self, method), method.removesuffix("_rate")
                break
        return self


def flink_variant(bench: FlinkBench, name: str, topics: dict[int, str], n: int, *, label: str | None = None,
                  knobs: dict[str, str] | None = None, parallelism: int = 1, only_2n: bool = False,
                  producer: dict[str, str] | None = None) -> Variant:
    """Run ``name`` at N and 2N events (or 2N only: no marginal rate) and settle its rates."""
    label = label or name
    small = None
    if not only_2n:
        log(f"  {label}: N={n:,} ...")
        small = bench.run_bounded(name, topics[n], n, knobs=knobs, parallelism=parallelism, producer=producer)
    log(f"  {label}: 2N={2 * n:,} ...")
    large = bench.run_bounded(name, topics[2 * n], 2 * n, knobs=knobs, parallelism=parallelism, timestamps=True,
                              producer=producer)
    description = DESCRIPTIONS.get(name, name) + (f", parallelism {parallelism}" if parallelism != 1 else "")
    variant = Variant(label, description, n, small.seconds if small else None, large.seconds,
                      span_rate=large.span_rate, knobs=knobs or {}, parallelism=parallelism).settle()
    log(f"  {label}: {variant.rate:,.0f} events/s ({variant.method}); wall "
        f"{f'{small.seconds:.1f}s / ' if small else ''}{large.seconds:.1f}s")
    return variant


_T0 = time.perf_counter()


def half_load_latency(bench: FlinkBench, corpus: Corpus, load: float, basis: str, seconds: float,
                      exactly_once: bool, knobs: dict[str, str] | None, *, retry: bool = True,
                      attempts: int = 3, variant: str = "e-full",
                      producer: dict[str, str] | None = None) -> tuple[dict[str, Any], float, str]:
    """One latency run; if the job could not keep up, again at half the rate it sustained.

    The load derived from the bounded runs can exceed what the unbounded job sustains next to its
    own producer (checkpoints, the producer's CPU); an overloaded run measures a growing queue,
    so it is kept in ``earlier_attempts`` and repeated. Returns (result, load, basis) for the next run.
    """
    earlier: list[dict[str, Any]] = []
    for attempt in range(attempts):
        sinks = "exactly-once" if exactly_once else "at-least-once"
        log(f"latency of {variant}, {sinks} sinks{f', {knobs}' if knobs else ''}: {load:,.0f} events/s for "
            f"{seconds:g} s ...")
        r = bench.latency(corpus, load, seconds, exactly_once=exactly_once, knobs=knobs, variant=variant,
                          producer=producer)
        r["load_basis"] = basis
        log(f"  {r['alerts']:,} alerts, p50 {fmt(r['alert_timestamp']['p50_ms'])} ms, "
            f"p99 {fmt(r['alert_timestamp']['p99_ms'])} ms, sustained {r['sustained_rate']:,.0f}/s, "
            f"backlog {r['backlog_at_end']:,}{' (overloaded)' if r['overloaded'] else ''}")
        if not (retry and r["overloaded"]) or attempt == attempts - 1:
            break
        earlier.append({k: r[k] for k in ("rate", "sustained_rate", "backlog_at_end", "alert_timestamp")})
        load, basis = r["sustained_rate"] / 2, "half the rate sustained by an overloaded run"
    r["earlier_attempts"] = earlier
    return r, load, basis


def capacity_probe_run(bench: FlinkBench, corpus: Corpus, fed: float, seconds: float, **job: Any) -> dict[str, Any]:
    """The unbounded job fed ``fed`` events/s: what it sustained (at-least-once sinks).

    A probe that sustained under a quarter of the feed is run once more and the better one kept:
    on a loaded machine the first unbounded job's start (Python workers, TensorFlow) can outlast
    its settling time, and half of such a figure is a load too small to raise any alert."""
    probe = bench.latency(corpus, fed, seconds, exactly_once=False, **job)
    if probe["sustained_rate"] < fed / 4:
        log(f"  sustained only {probe['sustained_rate']:,.0f}/s: probing once more ...")
        again = bench.latency(corpus, fed, seconds, exactly_once=False, **job)
        probe = max(probe, again, key=lambda r: r["sustained_rate"])
    return probe


def log(message: str) -> None:
    """Progress on stderr with seconds since import (the run's phases and what they cost)."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def ratios(variants: dict[str, Variant]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for top, bottom in RATIOS:
        if top in variants and bottom in variants and variants[bottom].rate:
            out[f"{top}/{bottom}"] = variants[top].rate / variants[bottom].rate
    return out


def goals(variants: dict[str, Variant], ratio: dict[str, float | None],
          latency: list[dict[str, Any]]) -> list[dict[str, Any]]:
    headline = next((r for r in latency if not r["exactly_once"] and not r.get("knobs")), None)
    low = [r for r in latency if r.get("variant") == "e-full-jvm" and r.get("knobs") == LOW_LATENCY]
    low_alo = next((r for r in low if not r["exactly_once"]), None)
    low_eo = next((r for r in low if r["exactly_once"]), None)
    measured_by_key: dict[str, float | None] = {
        "d": variants["d"].rate if "d" in variants else None, **ratio,
        "latency_p99_ms": headline["alert_timestamp"]["p99_ms"] if headline else None,
        "low_latency_p99_ms": low_alo["alert_timestamp"]["p99_ms"] if low_alo else None,
        # visible to a read_committed consumer, beyond one checkpoint interval (goal: within 1 s of it)
        "low_latency_eo_visible_p99_over_interval_ms":
            low_eo["alert_visible"]["p99_ms"] - low_eo["interval_ms"]
            if low_eo and low_eo["alert_visible"]["p99_ms"] is not None else None,
    }
    rows = []
    for label, key, target, op in GOALS:
        value = measured_by_key.get(key)
        met = None if value is None else bool(value >= target if op == ">=" else value <= target)
        rows.append({"goal": f"{label} {op} {target:g}", "measured": value, "met": met})
    return rows


class PipelineOptions(Options):
    """How big a run, and what else to measure (each mode's sizes: benchmarks/pipeline/settings.MODES)."""

    quick: bool = option(False, "N=30k, ~6 min: indicative figures")
    smoke: bool = option(False, "N=3k, every variant once: checks the benchmark runs, figures are noise")
    events: int | None = option(None, "N (overrides the mode's)", show_default="the mode's; full: 200000", ge=100)
    latency_seconds: float | None = option(None, "measured window of each latency run", show_default="the mode's",
                                           gt=0)
    latency_rate: float | None = option(None, "events/s fed to the latency runs",
                                        show_default="half of what the real job sustains in a capacity probe", gt=0)
    no_sweep: bool = option(False, "skip the Python UDF knob sweep")
    out: Path = option(Path(".vigil/benchmarks"), "folder for pipeline.json and pipeline.md")
    keep_topics: bool = option(False, "leave the benchmark's topics on the broker")


def run(vigil: VigilSettings, args: PipelineOptions) -> int:
    from stack import flink_home

    if args.quick and args.smoke:
        raise OptionsError("--quick and --smoke choose different sizes; give one")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    preset = dict(MODES[mode])
    if args.events:
        preset["events"] = args.events
        preset["unique_events"] = min(preset["unique_events"], args.events)
    if args.latency_seconds:
        preset["latency_seconds"] = args.latency_seconds
    if args.no_sweep:
        preset["sweep"] = False
    from jobs.core import jvm_decode

    settings = BenchSettings(mode=mode, bootstrap_servers=vigil.bootstrap_servers, out=args.out,
                             keep_topics=args.keep_topics,
                             decode_jar=str(jvm_decode.check_jar(jvm_decode.jar_path(vigil))), **preset)

    from connectors.kafka_io import check_broker, create_topic, delete_topic

    check_broker(settings.bootstrap_servers)
    flink_home.activate(vigil)
    run_id = uuid.uuid4().hex[:8]
    created: list[str] = []

    def new_topic(name: str, partitions: int = 3) -> str:
        topic = f"bench.pipeline.{run_id}.{name}.{len(created)}"
        create_topic(settings.bootstrap_servers, topic, partitions)
        created.append(topic)
        return topic

    started = time.perf_counter()
    n = settings.events
    variants: dict[str, Variant] = {}
    sweep: list[Variant] = []
    latency: list[dict[str, Any]] = []
    capacity_probe: dict[str, Any] | None = None
    capacity_probe_jvm: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
            log("training a quick model ...")
            model = make_model(Path(tmp))
            log(f"simulating {settings.unique_events:,} readings ...")
            corpus = make_corpus(settings.unique_events, settings.failure_rate)

            log(f"(a) producing N={n:,} and 2N={2 * n:,} records ...")
            topics = {n: new_topic("in-n"), 2 * n: new_topic("in-2n")}
            produce_all(settings.bootstrap_servers, topics[n], corpus, n)
            seconds = produce_all(settings.bootstrap_servers, topics[2 * n], corpus, 2 * n)
            variants["a-produce"] = Variant("a-produce", DESCRIPTIONS["a-produce"], 2 * n, rate=2 * n / seconds,
                                            method="wall", wall_rate=2 * n / seconds)
            consumed = consume_rate(settings.bootstrap_servers, topics[2 * n], 2 * n)
            variants["a-consume"] = Variant("a-consume", DESCRIPTIONS["a-consume"], 2 * n, rate=consumed,
                                            method="wall", wall_rate=consumed)
            log(f"  produce {variants['a-produce'].rate:,.0f}/s, consume {consumed:,.0f}/s")

            log("(g) model alone ...")
            g = model_alone(model, min_seconds=0.3 if mode != "full" else 2.0)
            variants["g"] = Variant("g", DESCRIPTIONS["g"], rate=g, method="best-of", wall_rate=g)
            log("(f) hand-rolled Python consumer ...")
            f = hand_rolled(settings.bootstrap_servers, topics[2 * n], new_topic("f"), model, 2 * n)
            variants["f"] = Variant("f", DESCRIPTIONS["f"], 2 * n, rate=f, method="wall", wall_rate=f)
            log(f"  (g) {g:,.0f} rows/s, (f) {f:,.0f} events/s")

            log("Flink: starting the JVM and a warm-up job (not measured) ...")
            bench = FlinkBench(settings, model, new_topic)
            bench.run_bounded("b", topics[n], n)
            for name in ("b-raw", "b", "c", "d", "e", "d-full", "e-full", "d-full-jvm", "e-full-jvm", "a-stage",
                         "b-stage", *SINK_VARIANTS):
                variants[name] = flink_variant(bench, name, topics, n)
            if settings.jvm_latency:  # what the low-latency profile costs in events/s
                variants["e-full-jvm/low-latency"] = flink_variant(bench, "e-full-jvm", topics, n,
                                                                   label="e-full-jvm/low-latency", knobs=LOW_LATENCY,
                                                                   producer=LOW_LATENCY_PRODUCER)
            if settings.parallelism2:
                variants["d@p2"] = flink_variant(bench, "d", topics, n, label="d@p2", parallelism=2)
                variants["e-full-jvm@p2"] = flink_variant(bench, "e-full-jvm", topics, n, label="e-full-jvm@p2",
                                                          parallelism=2)
            if settings.sweep:
                log("Python UDF knob sweep for (d) ...")
                configured = tuple(bench.configured_knobs[k] for k in KNOB_KEYS)
                for batch, bundle, bundle_ms in SWEEP:
                    knobs = dict(zip(KNOB_KEYS, (str(batch), str(bundle), str(bundle_ms))))
                    if (str(batch), str(bundle), str(bundle_ms)) == configured:
                        sweep.append(replace(variants["d"], name=f"d {batch}/{bundle}/{bundle_ms}", knobs=knobs))
                        continue
                    sweep.append(flink_variant(bench, "d", topics, n, label=f"d {batch}/{bundle}/{bundle_ms}",
                                               knobs=knobs, only_2n=True))

            # Half of (d) is several times what the real job sustains, so "half load" is half the
            # real job's own capacity, measured unbounded: a probe fed at its bounded (e-full) rate.
            load, basis = args.latency_rate, "--latency-rate"
            if not load:
                fed = variants["e-full"].rate
                log(f"latency: capacity probe of the unbounded job fed {fed:,.0f} events/s ...")
                probe = capacity_probe_run(bench, corpus, fed, min(settings.latency_seconds, 10.0))
                capacity = min(fed, probe["sustained_rate"])
                load, basis = capacity / 2, "half the rate the unbounded job sustained in the capacity probe"
                capacity_probe = {k: probe[k] for k in ("rate", "sustained_rate", "backlog_at_end", "overloaded")}
                log(f"  sustained {probe['sustained_rate']:,.0f}/s (backlog {probe['backlog_at_end']:,}): "
                    f"half load = {load:,.0f} events/s")
            runs: list[tuple[bool, dict[str, str] | None, float]] = [(False, None, settings.latency_seconds)]
            if settings.bundle_time_latency:
                runs.append((False, {KNOB_KEYS[2]: "100"}, settings.latency_seconds))
            if settings.exactly_once_latency:  # a few checkpoint intervals
                runs.append((True, None, max(settings.latency_seconds, 30.0)))
            for exactly_once, knobs, seconds in runs:
                r, load, basis = half_load_latency(bench, corpus, load, basis, seconds, exactly_once, knobs,
                                                   retry=not args.latency_rate)
                latency.append(r)
            if settings.jvm_latency:
                # the JVM-decode job (the default) at half of its own capacity (a probe fed at its bounded
                # rate), with each --profile; the low-latency one with both sink deliveries
                for label, knobs, producer in (("e-full-jvm", None, None),
                                               ("e-full-jvm/low-latency", LOW_LATENCY, LOW_LATENCY_PRODUCER)):
                    fed = variants[label].rate
                    log(f"latency: capacity probe of the unbounded {label} job fed {fed:,.0f} events/s ...")
                    probe = capacity_probe_run(bench, corpus, fed, min(settings.latency_seconds, 10.0),
                                               variant="e-full-jvm", knobs=knobs, producer=producer)
                    jvm_load = min(fed, probe["sustained_rate"]) / 2
                    if knobs is None:
                        capacity_probe_jvm = {k: probe[k] for k in ("rate", "sustained_rate", "backlog_at_end",
                                                                    "overloaded")}
                    basis = f"half the rate the unbounded {label} job sustained in its capacity probe"
                    deliveries = [False, True] if knobs and settings.exactly_once_latency else [False]
                    for exactly_once in deliveries:
                        seconds = max(settings.latency_seconds, 30.0) if exactly_once else settings.latency_seconds
                        r, _, _ = half_load_latency(bench, corpus, jvm_load, basis, seconds, exactly_once, knobs,
                                                    variant="e-full-jvm", producer=producer)
                        latency.append(r)
    finally:
        if not settings.keep_topics:
            for topic in created:
                try:
                    delete_topic(settings.bootstrap_servers, topic)
                except Exception as exc:  # cleanup must not hide the run's own error
                    log(f"could not delete {topic}: {exc}")

    ratio = ratios(variants)
    best = max(sweep, key=lambda v: v.rate).name if sweep else None
    result = {
        "mode": mode, "events": n, "host": platform.node(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "seconds": time.perf_counter() - started, "method": METHOD,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "configured_knobs": bench.configured_knobs, "checkpoint_interval": bench.checkpoint_interval,
        "variants": {name: asdict(v) for name, v in variants.items()}, "ratios": ratio,
        "sweep": [asdict(v) for v in sweep], "best_knobs": best, "capacity_probe": capacity_probe,
        "capacity_probe_jvm": capacity_probe_jvm,
        "latency": latency,
        "goals": goals(variants, ratio, latency),
    }
    table = markdown(result)
    print(table)
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(result, indent=2))
    (out / "pipeline.md").write_text(table + "\n\n" + METHOD + "\n")
    log(f"\nwritten: {out / 'pipeline.json'}, {out / 'pipeline.md'} ({result['seconds']:.0f} s)")
    return 0


COMMAND = command("pipeline", __doc__, run, options=PipelineOptions, settings_flags=("kafka.bootstrap_servers",),
                  expected_errors=(ConnectorError, RuntimeError), prog="python -m benchmarks.pipeline")


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)
