"""Fleet or per-entity thresholds on a fleet of unlike machines: the NAB files as one fleet.

    python -m benchmarks.quality.fleet [--quick] [--seeds 1] [--out .vigil/benchmarks]

A user's topic often holds unlike machines. The five real NAB series (../shared/datasets/nab) are
five such machines, each with its own scale and noise: here they are one fleet, each file one
entity of one model, as one topic of theirs would be (each file's clock is moved to start at the
same instant, so the machines report side by side, as a fleet's do). One model is trained (the trainer's defaults,
plus ``--threshold-per entity``) on the first 15% of each file by time, and scores every reading in
plain Python (``udfs.anomaly_score.LoadedModel.score_context``, which gives the Flink jobs' flags).
The same scores are then flagged twice, against the fleet's one threshold and against each
machine's own (``thresholds_by_entity``), and the figures are on the rest of each file, which no
model saw while it trained. No setting is chosen on these figures: margin and quantile are the
trainer's defaults. Figures are point-wise, pooled over the files (benchmarks.quality.run.figures).

``--quick``: the two smallest files, one seed, one ensemble member (CI size). Writes
``<out>/quality-fleet.json``.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.quality.margin import FIRST_SEED, QUICK_FILES, cell, over_seeds, pool
from benchmarks.quality.run import NAB, NAB_FILES, NAB_TRAIN_SHARE, Dataset, figures
from vigil.commands import Options, command, option
from vigil.settings import PROJECT_ROOT, VigilSettings

CALIBRATIONS = ("fleet", "entity")
START = pd.Timestamp("2026-01-01")   # every machine's first reading (the files' own years differ)


class FleetOptions(Options):
    quick: bool = option(False, "CI size: the two smallest NAB files, one seed, one ensemble member")
    seeds: int = option(1, "model seeds: the first N from 42 (the spread is reported)", ge=1, le=10)
    out: Path = option(PROJECT_ROOT / ".vigil" / "benchmarks", "folder for quality-fleet.json")


def nab_fleet(files: list[str]) -> tuple[pd.DataFrame, dict[str, Dataset]]:
    """The files as one frame of entities (a file = a machine), with labels and each file's split."""
    parts, data = [], {}
    windows_of = json.loads((NAB / "anomaly_windows.json").read_text())
    for name in files:
        path = NAB / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the NAB data lives in ../shared/datasets/nab (see its "
                                    f"README); VIGIL_DATASETS names another datasets folder")
        frame = pd.read_csv(path, parse_dates=["timestamp"]).assign(entity=Path(name).stem)
        # the machines report side by side, as a fleet's do: each file's clock starts at START
        shift = START - frame["timestamp"].iloc[0]
        frame["timestamp"] += shift
        boundary = frame["timestamp"].iloc[int(len(frame) * NAB_TRAIN_SHARE)]
        windows = [(pd.Timestamp(a) + shift, pd.Timestamp(b) + shift) for a, b in windows_of[name]]
        frame["label"] = False
        for a, b in windows:
            frame.loc[(frame["timestamp"] >= a) & (frame["timestamp"] <= b), "label"] = True
        frame["train"] = frame["timestamp"] < boundary
        parts.append(frame)
        data[Path(name).stem] = Dataset(name, name, boundary, windows, len(frame))
    return pd.concat(parts, ignore_index=True), data


def run_seed(frame: pd.DataFrame, data: dict[str, Dataset], seed: int, members: int | None) -> dict[str, Any]:
    """One model on the fleet; each file's figures with the fleet's threshold and with its own.
    ``members``: ensemble members (None: the trainer's default)."""
    from jobs.training.trainer import TrainOptions, train
    from udfs.anomaly_score import LoadedModel
    from udfs.feature_set import FeatureSet, context_from_frame

    options = TrainOptions(topic="nab-fleet", eval_fraction=0, min_rows=100, seed=seed, quiet=True,
                           threshold_per="entity", **({"members": members} if members else {}))
    train_rows = frame[frame["train"]].reset_index(drop=True)
    with tempfile.TemporaryDirectory(prefix="vigil-fleet-") as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        trained = train(train_rows, FeatureSet(["value"]), None, "timestamp", options, folder, entity_col="entity")
        seconds = time.monotonic() - started
        trained.save(folder)
        manifest = {"version": f"nab-fleet@{seed}", **trained.fields}
        model = LoadedModel(folder, manifest, "numpy")
        ctx = context_from_frame(frame, ["value"], "entity", "timestamp", [], model.window)
        entities = frame["entity"].to_numpy(dtype=object)
        scores, own_flags, status = model.score_context(ctx, entities)
        flags = {"fleet": model.flags(scores, status), "entity": own_flags}   # the same scores, flagged twice
    rows = frame.rename(columns={"timestamp": "event_time"})
    per_file: dict[str, dict[str, Any]] = {c: {} for c in CALIBRATIONS}
    for calibration, flagged in flags.items():
        predicted = np.asarray(flagged == True, bool)  # noqa: E712 - object array of True/False/None
        for entity, dataset in data.items():
            mine = (rows["entity"] == entity).to_numpy()
            per_file[calibration][entity] = figures(rows[mine].reset_index(drop=True), predicted[mine], dataset)
    own = manifest.get("thresholds_by_entity", {})
    return {"seed": seed, "train_seconds": round(seconds, 1), "window": model.window,
            "fleet_threshold": manifest["threshold"], "own_thresholds": own,
            "per_file": per_file, "pooled": {c: pool(list(per_file[c].values())) for c in CALIBRATIONS}}


def print_tables(results: dict[str, Any]) -> None:
    runs, n = results["runs"], len(results["runs"])
    print(f"\nNAB as one fleet of {len(results['files'])} machines (a file = an entity), one model; "
          f"seeds {results['seeds']}{' (mean ± std)' if n > 1 else ''}\n")
    print("| machine | fleet threshold: F1 | false alarms | own threshold: F1 | false alarms | "
          "windows caught (fleet / own) |")
    print("|---|---|---|---|---|---|")

    def summary(calibration: str, entity: str | None) -> dict[str, Any]:
        return over_seeds([r["pooled"][calibration] if entity is None else r["per_file"][calibration][entity]
                           for r in runs])

    for entity in [*runs[0]["per_file"]["fleet"], None]:
        f, e = summary("fleet", entity), summary("entity", entity)
        entity = entity or "**pooled**"
        print(f"| {entity} | {cell(f['f1'], seeds=n)} | {cell(f['false_alarm_rate'], True, n)} | "
              f"{cell(e['f1'], seeds=n)} | {cell(e['false_alarm_rate'], True, n)} | "
              f"{f['windows_caught']['mean']:.1f} / {e['windows_caught']['mean']:.1f} of {f['windows']} |")
    for r in runs:
        own = ", ".join(f"{k} {v:.3g}" for k, v in r["own_thresholds"].items())
        print(f"\nseed {r['seed']}: fleet threshold {r['fleet_threshold']:.3g}; own: {own} "
              f"(train {r['train_seconds']} s)")


def run(settings: VigilSettings, o: FleetOptions) -> int:
    started = time.monotonic()
    files = list(QUICK_FILES if o.quick else NAB_FILES)
    seeds = list(range(FIRST_SEED, FIRST_SEED + (1 if o.quick else o.seeds)))
    frame, data = nab_fleet(files)
    runs = []
    for seed in seeds:
        runs.append(run_seed(frame, data, seed, members=1 if o.quick else None))
        p = runs[-1]["pooled"]
        print(f"seed {seed}: pooled F1 fleet {p['fleet']['f1']:.3f} (false alarms {p['fleet']['false_alarm_rate']:.1%})"
              f", own {p['entity']['f1']:.3f} ({p['entity']['false_alarm_rate']:.1%})", flush=True)
    results = {"mode": "quick" if o.quick else "full", "files": files, "seeds": seeds, "runs": runs,
               "split": f"train on the first {NAB_TRAIN_SHARE:.0%} of each file by time, score the rest",
               "seconds": round(time.monotonic() - started, 1)}
    print_tables(results)
    o.out.mkdir(parents=True, exist_ok=True)
    (o.out / "quality-fleet.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {o.out / 'quality-fleet.json'} ({results['seconds']:.0f} s)")
    return 0


COMMAND = command("quality-fleet", __doc__, run, options=FleetOptions, expected_errors=(FileNotFoundError,),
                  prog="python -m benchmarks.quality.fleet")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
