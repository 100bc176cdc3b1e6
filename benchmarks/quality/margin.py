"""The threshold margin, chosen leave one file out on the NAB files, with its spread over seeds.

    python -m benchmarks.quality.margin [--quick] [--seeds 3] [--out .vigil/benchmarks]

The product's threshold is ``threshold_margin`` (default 3) x the ``threshold_quantile`` (0.99)
quantile of the validation scores (jobs/training/trainer.train). This measures what another margin
would do, without choosing it on the figures it reports.

Split. Each of the five real NAB series in ../shared/datasets/nab is one entity; the product's
default model (jobs.training.trainer.train with the trainer's defaults: window context, 3 members)
is trained on the first 15% of the file by time (NAB's probationary period) and scores the whole
file; the figures are on the rest (the test part), which no model saw while it trained. The path
is plain Python (``udfs.anomaly_score.LoadedModel.score_context``), which gives the same scores
and flags as the Kafka + Flink path. The threshold is linear in the margin, so one model per
(file, seed) is trained and each margin ``m`` of the grid is evaluated at ``threshold / margin x m``
(the margin the model was trained with comes from its manifest's ``threshold_rule``).

Figures are point-wise, as benchmarks.quality defines them: F1 pooled over the test readings of the
files, false-alarm rate (false alarms / normal readings), missed rate (missed / anomalous readings),
labelled windows with at least one alarm.

Leave one file out: for each file, the margin is chosen on the other four (largest pooled F1 with a
pooled false-alarm rate <= 10%; ties go to the larger margin; when no margin keeps to 10%, the one
with the fewest false alarms) and the held-out file is measured at that margin. The held-out
predictions of the five folds, pooled, give the honest figure of the choice, per seed and as mean
+/- std over seeds. The pooled figures of every margin on all five files are printed too: they are
NOT held out (choosing from them would choose on the test data).

Simulator check: the product's fleet simulator (jobs.simulation.generate, no Kafka; the fleet of
benchmarks.quality's simulator dataset: 10 vehicles, 30,000 readings, seed 17), the default model
trained on the first 40% of the time range (labelled failures left out, as the trainer does),
scored on the rest, the same figures per margin.

``--quick``: the two smallest NAB files, one seed, no simulator (CI size). Writes
``<out>/quality-margin.json``.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.quality.run import NAB, NAB_FILES, NAB_TRAIN_SHARE, SIM_TRAIN_SHARE, Dataset, figures
from vigil.commands import Options, command, option
from vigil.settings import PROJECT_ROOT, VigilSettings

MARGINS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)   # 3 = the trainer's default
MAX_FALSE_ALARMS = 0.10
FIRST_SEED = 42
QUICK_FILES = ("rogue_agent_key_hold.csv", "ec2_request_latency_system_failure.csv")
SIM_FLEET = {"vehicles": 10, "events": 30_000, "seed": 17}   # benchmarks.quality's "sim" dataset, full size


class MarginOptions(Options):
    quick: bool = option(False, "CI size: the two smallest NAB files, one seed, no simulator")
    seeds: int | None = option(None, "seeds per file: the first N from 42 (the spread is reported)", ge=1, le=10,
                               show_default="3 (quick: 1)")
    out: Path = option(PROJECT_ROOT / ".vigil" / "benchmarks", "folder for quality-margin.json")


@dataclass
class Scored:
    """The test part of one (dataset, seed): rows for ``figures`` and the scores a margin thresholds."""

    data: Dataset
    rows: pd.DataFrame           # event_time, entity, label of the whole dataset (figures() keeps the test part)
    scores: np.ndarray           # per row; NaN = unscorable (never flagged)
    flaggable: np.ndarray        # scorable and past the entity's warm-up: what score_context may flag
    base: float                  # threshold / margin: the threshold at margin 1
    info: dict[str, Any]

    def predicted(self, margin: float) -> np.ndarray:
        return self.flaggable & (np.nan_to_num(self.scores, nan=-np.inf) > self.base * margin)

    def at(self, margin: float) -> dict[str, Any]:
        return figures(self.rows, self.predicted(margin), self.data)


def train_and_score(frame: pd.DataFrame, features: Any, label_col: str | None, time_col: str, entity_col: str,
                    train_mask: np.ndarray, seed: int, topic: str) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """Train the default model on ``frame[train_mask]`` and score all of ``frame`` in plain Python;
    returns (scores, flaggable, threshold at margin 1, info)."""
    from jobs.training.trainer import TrainOptions, train
    from udfs.anomaly_score import LoadedModel
    from udfs.feature_set import context_from_frame

    options = TrainOptions(topic=topic, eval_fraction=0, min_rows=100, seed=seed, quiet=True)
    with tempfile.TemporaryDirectory(prefix="vigil-margin-") as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        trained = train(frame[train_mask].reset_index(drop=True), features, label_col, time_col, options, folder,
                        entity_col=entity_col)
        train_s = time.monotonic() - started
        trained.save(folder)
        manifest = {"version": f"{topic}@{seed}", **trained.fields}
        model = LoadedModel(folder, manifest, "numpy")
        ctx = context_from_frame(frame, model.features.names, entity_col, time_col, [], model.window)
        scores, flags, status = model.score_context(ctx)
    margin = float(manifest["threshold_rule"]["margin"])
    flaggable = ~np.asarray(status.unscorable, bool) & ~np.asarray(status.warming, bool)
    base = manifest["threshold"] / margin
    # the margin grid reproduces the job's own flags at the trained margin
    assert np.array_equal(flaggable & (np.nan_to_num(scores, nan=-np.inf) > base * margin),
                          np.asarray(flags == True, bool)), "margin scaling does not reproduce the flags"  # noqa: E712
    info = {"window": model.window, "threshold": manifest["threshold"], "trained_margin": margin,
            "trained_quantile": manifest["threshold_rule"]["quantile"], "train_seconds": round(train_s, 1),
            "epochs": manifest["metrics"]["epochs_run"]}
    return np.asarray(scores, np.float64), flaggable, base, info


def nab_run(name: str, seed: int) -> Scored:
    from udfs.feature_set import FeatureSet

    path = NAB / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the NAB data lives in ../shared/datasets/nab (see its README); "
                                f"VIGIL_DATASETS names another datasets folder")
    frame = pd.read_csv(path, parse_dates=["timestamp"])
    frame["entity_id"] = "e"
    boundary = frame["timestamp"].iloc[int(len(frame) * NAB_TRAIN_SHARE)]
    windows = [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in
               json.loads((NAB / "anomaly_windows.json").read_text())[name]]
    train_mask = (frame["timestamp"] < boundary).to_numpy()
    scores, flaggable, base, info = train_and_score(frame, FeatureSet(["value"]), None, "timestamp", "entity_id",
                                                    train_mask, seed, Path(name).stem.replace("_", "-"))
    rows = pd.DataFrame({"event_time": frame["timestamp"], "entity": frame["entity_id"]})
    rows["label"] = np.zeros(len(rows), bool)
    for a, b in windows:
        rows.loc[(rows["event_time"] >= a) & (rows["event_time"] <= b), "label"] = True
    return Scored(Dataset(name, name, boundary, windows, len(frame)), rows, scores, flaggable, base, info)


def sim_run(seed: int) -> Scored:
    from connectors.avro_serde import load_schema, roles
    from jobs.simulation import FIXED_START, FleetSettings, generate
    from udfs.feature_set import FeatureSet

    schema = load_schema()
    role = roles(schema)
    fleet = FleetSettings(start=FIXED_START, **SIM_FLEET)
    frame = pd.DataFrame(list(generate(fleet)))
    times = pd.to_datetime(frame[role["time"]], utc=True).dt.tz_convert(None)
    span = fleet.events / fleet.vehicles * fleet.interval_s
    boundary = pd.Timestamp(FIXED_START.replace(tzinfo=None)) + pd.Timedelta(seconds=span * SIM_TRAIN_SHARE)
    train_mask = (times < boundary).to_numpy()
    scores, flaggable, base, info = train_and_score(frame, FeatureSet.from_schema(schema), role["label"], role["time"],
                                                    role["entity"], train_mask, seed, "sim")
    rows = pd.DataFrame({"event_time": times, "entity": frame[role["entity"]],
                         "label": frame[role["label"]].notna().to_numpy()})
    info.update(fleet={**SIM_FLEET, "interval_s": fleet.interval_s}, labelled=int(rows["label"].sum()))
    return Scored(Dataset("sim", "sim", boundary, None, len(frame)), rows, scores, flaggable, base, info)


# --- pooling and the leave-one-file-out choice ---------------------------------------------------

def counts(fig: dict[str, Any]) -> dict[str, int]:
    """True/false positives and negatives of a figures() result (exact: rates x integer totals)."""
    anomalous, normal = fig["anomalous"], fig["readings"] - fig["anomalous"]
    tp = round(fig["recall"] * anomalous)
    fp = round(fig["false_alarm_rate"] * normal)
    return {"tp": tp, "fn": anomalous - tp, "fp": fp, "tn": normal - fp,
            "windows": fig["windows"], "windows_caught": fig["windows_caught"]}


def pool(figs: list[dict[str, Any]]) -> dict[str, Any]:
    """Point-wise figures over all test readings of several files (benchmarks.quality's pooling)."""
    c = {k: sum(counts(f)[k] for f in figs) for k in ("tp", "fn", "fp", "tn", "windows", "windows_caught")}
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    return {"f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "precision": precision, "recall": recall,
            "false_alarm_rate": c["fp"] / (c["fp"] + c["tn"]) if c["fp"] + c["tn"] else 0.0,
            "missed_rate": c["fn"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0,
            "windows": c["windows"], "windows_caught": c["windows_caught"],
            "readings": c["tp"] + c["fn"] + c["fp"] + c["tn"], "anomalous": c["tp"] + c["fn"]}


def choose(per_margin: dict[float, dict[str, Any]]) -> tuple[float, bool]:
    """(margin, kept to the false-alarm limit): the largest F1 with false alarms <= 10% (ties: the larger
    margin); when none keeps to it, the margin with the fewest false alarms."""
    allowed = [m for m, f in per_margin.items() if f["false_alarm_rate"] <= MAX_FALSE_ALARMS]
    if not allowed:
        return min(per_margin, key=lambda m: (per_margin[m]["false_alarm_rate"], -m)), False
    return max(allowed, key=lambda m: (round(per_margin[m]["f1"], 12), m)), True


def leave_one_out(at: dict[str, dict[float, dict[str, Any]]]) -> dict[str, Any]:
    """One seed: ``at[file][margin]`` figures -> each fold's choice and held-out figures, and their pool."""
    folds = {}
    for held in at:
        others = [n for n in at if n != held]
        training = {m: pool([at[n][m] for n in others]) for m in MARGINS}
        margin, within = choose(training)
        folds[held] = {"margin": margin, "within_limit": within, "chosen_on": others,
                       "choosing_f1": training[margin]["f1"], "choosing_false_alarm_rate":
                           training[margin]["false_alarm_rate"], "held_out": at[held][margin]}
    return {"folds": folds, "pooled": pool([f["held_out"] for f in folds.values()])}


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


METRICS = ("f1", "false_alarm_rate", "missed_rate", "windows_caught")


def over_seeds(figs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: spread([f[k] for f in figs]) for k in METRICS} | {"windows": figs[0]["windows"]}


# --- printing ------------------------------------------------------------------------------------

def cell(s: dict[str, float], pct: bool = False, seeds: int = 1) -> str:
    mean, std = (100 * s["mean"], 100 * s["std"]) if pct else (s["mean"], s["std"])
    text = f"{mean:.1f}%" if pct else f"{mean:.3f}"
    return text + (f" ± {std:.1f}" if pct else f" ± {std:.3f}") if seeds > 1 else text


def windows_cell(s: dict[str, Any], seeds: int) -> str:
    w = s["windows_caught"]
    return (f"{w['mean']:.1f}" if seeds > 1 else f"{w['mean']:.0f}") + f" / {s['windows']}"


def print_tables(results: dict[str, Any]) -> None:
    seeds = results["seeds"]
    n = len(seeds)
    std = " (mean ± std over seeds)" if n > 1 else ""
    files = results["files"]
    print(f"\nAll {len(files)} NAB files pooled, per margin: NOT held out (the test data of every file){std}\n")
    print("| margin | F1 | false alarms | missed | windows caught |")
    print("|---|---|---|---|---|")
    for m, s in results["all_files"].items():
        print(f"| {m} | {cell(s['f1'], seeds=n)} | {cell(s['false_alarm_rate'], True, n)} | "
              f"{cell(s['missed_rate'], True, n)} | {windows_cell(s, n)} |")
    print(f"\nLeave one file out: margin chosen on the other files (max pooled F1 with false alarms <= "
          f"{MAX_FALSE_ALARMS:.0%}), measured on the held-out file; chosen margin per seed {tuple(seeds)}{std}\n")
    print("| held-out file | chosen margin | F1 | false alarms | missed | windows caught |")
    print("|---|---|---|---|---|---|")
    for name, fold in results["loo"]["folds"].items():
        chosen = "/".join(f"{m:g}" + ("" if ok else "*") for m, ok in zip(fold["margins"], fold["within_limit"]))
        s = fold["held_out"]
        print(f"| {Path(name).stem} | {chosen} | {cell(s['f1'], seeds=n)} | {cell(s['false_alarm_rate'], True, n)} "
              f"| {cell(s['missed_rate'], True, n)} | {windows_cell(s, n)} |")
    if any(not ok for fold in results["loo"]["folds"].values() for ok in fold["within_limit"]):
        print(f"(* no margin kept the other files' false alarms <= {MAX_FALSE_ALARMS:.0%}: the fewest was taken)")
    print("\nPooled held-out figures (every fold's held-out readings together)\n")
    print("| seed | F1 | false alarms | missed | windows caught | default margin 3: F1 | false alarms |")
    print("|---|---|---|---|---|---|---|")
    default = results["default_margin"]
    for seed in seeds:
        p, d = results["loo"]["per_seed"][str(seed)]["pooled"], results["per_seed_all_files"][str(seed)][default]
        print(f"| {seed} | {p['f1']:.3f} | {p['false_alarm_rate']:.1%} | {p['missed_rate']:.1%} | "
              f"{p['windows_caught']} / {p['windows']} | {d['f1']:.3f} | {d['false_alarm_rate']:.1%} |")
    if n > 1:
        s, d = results["loo"]["pooled"], results["all_files"][default]
        print(f"| mean ± std | {cell(s['f1'], seeds=n)} | {cell(s['false_alarm_rate'], True, n)} | "
              f"{cell(s['missed_rate'], True, n)} | {windows_cell(s, n)} | {cell(d['f1'], seeds=n)} | "
              f"{cell(d['false_alarm_rate'], True, n)} |")
    sim = results.get("simulator")
    if sim and "per_margin" in sim:
        k = len(sim["seeds"])
        print(f"\nSimulator ({sim['fleet']['vehicles']} vehicles, {sim['fleet']['events']:,} readings, fleet seed "
              f"{sim['fleet']['seed']}; trained on the first {SIM_TRAIN_SHARE:.0%}, scored on the rest), per margin"
              + (f", model seeds {tuple(sim['seeds'])} (mean ± std)" if k > 1 else f", model seed {sim['seeds'][0]}")
              + "\n")
        print("| margin | F1 | false alarms | missed | windows caught |")
        print("|---|---|---|---|---|")
        for m, s in sim["per_margin"].items():
            print(f"| {m} | {cell(s['f1'], seeds=k)} | {cell(s['false_alarm_rate'], True, k)} | "
                  f"{cell(s['missed_rate'], True, k)} | {windows_cell(s, k)} |")
    elif sim:
        print(f"\nSimulator: skipped ({sim.get('skipped')})")


# --- the command ---------------------------------------------------------------------------------

def run(settings: VigilSettings, o: MarginOptions) -> int:
    started = time.monotonic()
    files = list(QUICK_FILES if o.quick else NAB_FILES)
    seeds = list(range(FIRST_SEED, FIRST_SEED + (o.seeds or (1 if o.quick else 3))))
    key = lambda m: f"{m:g}"  # noqa: E731 - margins as JSON keys
    results: dict[str, Any] = {
        "mode": "quick" if o.quick else "full", "seeds": seeds, "margins": list(MARGINS), "files": files,
        "default_margin": key(3.0), "max_false_alarm_rate": MAX_FALSE_ALARMS,
        "split": {"nab": f"train on the first {NAB_TRAIN_SHARE:.0%} of each file by time, score the rest",
                  "sim": f"train on the first {SIM_TRAIN_SHARE:.0%} of the time range, score the rest",
                  "choice": "leave one file out: max pooled F1 on the other files with false alarms <= 10%, "
                            "ties -> larger margin"},
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "runs": {}}
    at: dict[int, dict[str, dict[float, dict[str, Any]]]] = {}
    for seed in seeds:
        for name in files:
            scored = nab_run(name, seed)
            at.setdefault(seed, {})[name] = {m: scored.at(m) for m in MARGINS}
            results["runs"].setdefault(name, {})[str(seed)] = {
                **scored.info, "per_margin": {key(m): f for m, f in at[seed][name].items()}}
            d = at[seed][name][3.0]
            print(f"{name:44s} seed {seed}: window {scored.info['window']}, threshold {scored.info['threshold']:.3g}, "
                  f"train {scored.info['train_seconds']}s; margin 3: F1 {d['f1']:.3f} false alarms "
                  f"{d['false_alarm_rate']:.1%}; margin 1: F1 {at[seed][name][1.0]['f1']:.3f} false alarms "
                  f"{at[seed][name][1.0]['false_alarm_rate']:.1%}", flush=True)
    per_seed_all = {str(s): {key(m): pool([at[s][n][m] for n in files]) for m in MARGINS} for s in seeds}
    results["per_seed_all_files"] = per_seed_all
    results["all_files"] = {key(m): over_seeds([per_seed_all[str(s)][key(m)] for s in seeds]) for m in MARGINS}
    loo = {str(s): leave_one_out(at[s]) for s in seeds}
    for fold in (f for r in loo.values() for f in r["folds"].values()):
        fold["margin"] = key(fold["margin"])
    results["loo"] = {
        "per_seed": loo,
        "folds": {n: {"margins": [float(loo[str(s)]["folds"][n]["margin"]) for s in seeds],
                      "within_limit": [loo[str(s)]["folds"][n]["within_limit"] for s in seeds],
                      "held_out": over_seeds([loo[str(s)]["folds"][n]["held_out"] for s in seeds])} for n in files},
        "pooled": over_seeds([loo[str(s)]["pooled"] for s in seeds])}
    results["nab_seconds"] = round(time.monotonic() - started, 1)
    if o.quick:
        results["simulator"] = {"skipped": "--quick"}
    else:
        sim_started = time.monotonic()
        runs = []
        for seed in seeds:
            scored = sim_run(seed)
            runs.append({**scored.info, "seed": seed, "per_margin": {key(m): scored.at(m) for m in MARGINS}})
            d = runs[-1]["per_margin"][key(3.0)]
            print(f"{'simulator':44s} seed {seed}: window {scored.info['window']}, threshold "
                  f"{scored.info['threshold']:.3g}, train {scored.info['train_seconds']}s; margin 3: F1 "
                  f"{d['f1']:.3f} false alarms {d['false_alarm_rate']:.1%}", flush=True)
        results["simulator"] = {"fleet": runs[0]["fleet"], "seeds": seeds, "runs": runs,
                                "per_margin": {key(m): over_seeds([r["per_margin"][key(m)] for r in runs])
                                               for m in MARGINS},
                                "seconds": round(time.monotonic() - sim_started, 1)}
    results["seconds"] = round(time.monotonic() - started, 1)
    print_tables(results)
    o.out.mkdir(parents=True, exist_ok=True)
    (o.out / "quality-margin.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {o.out / 'quality-margin.json'} ({results['seconds']:.0f} s)")
    return 0


COMMAND = command("quality-margin", __doc__, run, options=MarginOptions, expected_errors=(FileNotFoundError,),
                  prog="python -m benchmarks.quality.margin")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
