"""Rows/s of row validation with the telemetry-v1 suite, GX engine vs compiled engine, per batch size.

    python -m benchmarks.validation_cost [--quick] [--batches 1000,10000,50000] [--out .vigil/benchmarks]

Rows are simulated readings (jobs.simulation) with ~2% of them damaged: a value far outside its
physical range, NaN, ±inf, a bad firmware string or an unknown label. Measured, on the same rows:
* ``gx``: ``SuiteValidator(engine="gx").failures`` — Great Expectations validating each batch;
* ``compiled``: ``SuiteValidator(engine="compiled").failures`` — the same suite as numpy masks;
* ``udf-compiled``: ``ValidateFeatures.eval`` on the columns as Series, what a Flink Python worker runs.
The table gives rows/s, compiled / gx, and the share of one core that validating 150k events/s
would take (150k / rows/s; above 100% means one worker cannot keep up).
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vigil.commands import Options, command, int_list, option
from vigil.settings import VigilSettings

PIPELINE_EVENTS_PER_S = 150_000
BAD_SHARE = 0.02


def simulated_rows(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` simulated readings with ~2% of them damaged (one bad value each)."""
    from jobs.simulation import PHYSICAL_RANGES, FleetSettings, generate

    frame = pd.DataFrame(list(generate(FleetSettings(vehicles=50, events=rows, seed=seed))))
    rng = np.random.default_rng(seed)
    bad = np.flatnonzero(rng.random(rows) < BAD_SHARE)
    numeric = list(PHYSICAL_RANGES)
    for row, kind in zip(bad, rng.integers(0, 5, len(bad))):
        column = numeric[rng.integers(len(numeric))]
        low, high = PHYSICAL_RANGES[column]
        if kind == 0:
            frame.at[row, column] = high + (high - low)
        elif kind == 1:
            frame.at[row, column] = rng.choice([np.nan, np.inf, -np.inf])
        elif kind == 2:
            frame.at[row, "firmware_version"] = rng.choice(["3.2", "v3.2.1", ""])
        elif kind == 3:
            frame.at[row, "firmware_version"] = None
        else:
            frame.at[row, "failure_label"] = "oil_leak"
    return frame


def rate(fn, rows: int, min_seconds: float) -> float:
    """Rows per second of ``fn()`` (which validates ``rows`` rows), best of repeated timed calls."""
    fn()  # warm-up
    best = 0.0
    deadline = time.perf_counter() + min_seconds
    while True:
        start = time.perf_counter()
        fn()
        best = max(best, rows / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            return best


class ValidationCostOptions(Options):
    quick: bool = option(False, "short timing loops (CI)")
    batches: list[int] = option([1000, 10000, 50000], "batch sizes to measure, comma-separated", parse=int_list)
    out: Path = option(Path(".vigil/benchmarks"), "folder for validation_cost.json and .md")


def run(_settings: VigilSettings, args: ValidationCostOptions) -> int:
    min_seconds = 0.5 if args.quick else 3.0
    batches = args.batches

    from udfs.validate_features import (
        TELEMETRY_COLUMNS,
        SuiteValidator,
        ValidateFeatures,
        load_suite,
    )

    suite = load_suite("telemetry-v1")
    gx, compiled = SuiteValidator(suite, engine="gx"), SuiteValidator(suite)
    fn = ValidateFeatures(suite, TELEMETRY_COLUMNS)
    fn.open(None)
    everything = simulated_rows(max(batches))
    results = []
    for batch in batches:
        frame = everything.head(batch)
        flagged = compiled.failures(frame)
        if not flagged.equals(gx.failures(frame)):  # a benchmark of two engines that disagree is moot
            raise SystemExit(f"engines disagree on the {batch}-row batch")
        columns = [frame[c].reset_index(drop=True) for c in TELEMETRY_COLUMNS]
        row = {"batch": batch, "flagged_rows": int(flagged.notna().sum()),
               "gx": rate(lambda: gx.failures(frame), batch, min_seconds),
               "compiled": rate(lambda: compiled.failures(frame), batch, min_seconds),
               "udf-compiled": rate(lambda: fn.eval(*columns), batch, min_seconds)}
        results.append(row)

    engines = ["gx", "compiled", "udf-compiled"]
    header = ("| batch | flagged | " + " | ".join(f"{n} rows/s" for n in engines) + " | compiled / gx | "
              + " | ".join(f"{n} share of {PIPELINE_EVENTS_PER_S // 1000}k ev/s" for n in engines) + " |")
    lines = [header, "|" + "---|" * (2 * len(engines) + 3)]
    for row in results:
        rates = [f"{row[n]:,.0f}" for n in engines]
        shares = [f"{PIPELINE_EVENTS_PER_S / row[n]:.1%}" for n in engines]
        lines.append(f"| {row['batch']:,} | {row['flagged_rows']:,} | " + " | ".join(rates)
                     + f" | {row['compiled'] / row['gx']:.0f}x | " + " | ".join(shares) + " |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"quick": args.quick, "suite": suite["name"], "expectations": len(suite["expectations"]),
            "bad_share": BAD_SHARE, "pipeline_events_per_s": PIPELINE_EVENTS_PER_S,
            "host": platform.node(), "python": platform.python_version()}
    (out / "validation_cost.json").write_text(json.dumps({**meta, "results": results}, indent=2))
    (out / "validation_cost.md").write_text(
        f"Row validation, suite {suite['name']} ({len(suite['expectations'])} expectations), "
        f"~{BAD_SHARE:.0%} damaged rows; share = {PIPELINE_EVENTS_PER_S:,} / rows/s of one core.\n\n{table}\n")
    print(f"\nwritten: {out / 'validation_cost.json'}, {out / 'validation_cost.md'}")
    return 0


COMMAND = command("validation-cost", __doc__, run, options=ValidationCostOptions,
                  prog="python -m benchmarks.validation_cost")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
