"""The quality benchmark's command (see the package docstring)."""
from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vigil.commands import Options, command, comma_list, option
from vigil.settings import PROJECT_ROOT, VigilSettings

def _datasets() -> Path:
    """The public datasets folder: $VIGIL_DATASETS, else ``shared/datasets`` beside the project or one
    of its parents (``../shared/datasets`` in the development layout), else this machine's
    /work/shared/datasets (where a clone elsewhere, e.g. CI's, finds it)."""
    import os

    given = os.environ.get("VIGIL_DATASETS")
    candidates = [Path(given)] if given else []
    candidates += [parent / "shared" / "datasets" for parent in PROJECT_ROOT.parents]
    candidates.append(Path("/work/shared/datasets"))
    return next((c for c in candidates if (c / "nab").is_dir()), candidates[0])


NAB = _datasets() / "nab"
NAB_FILES = ("rogue_agent_key_hold.csv", "ec2_request_latency_system_failure.csv",
             "ambient_temperature_system_failure.csv", "cpu_utilization_asg_misconfiguration.csv",
             "machine_temperature_system_failure.csv")
QUICK_NAB = ("rogue_agent_key_hold.csv",)
NAB_TRAIN_SHARE = 0.15   # NAB's probationary period: learn on the first 15% of each file
SIM_TRAIN_SHARE = 0.4

# Candidate models: training options on top of the trainer's defaults.
CANDIDATES: dict[str, dict[str, Any]] = {
    "dense-old": {"context": "point", "members": 1, "hidden": [32, 16, 8], "batch_size": 256, "epochs": 150,
                  "patience": 6, "threshold_quantile": 0.995, "threshold_margin": 1.0, "score_reduce": "mean"},
    "dense": {"context": "point"},
    "window": {"context": "window"},
    "stats": {"context": "stats"},
}
DEFAULT_CANDIDATE = "window"
# Alert hysteresis (enter, within, clear) replayed on the job's flags; (1, 1, 1) = runs of flags.
HYSTERESIS = ((1, 1, 1), (2, 3, 3), (3, 5, 5), (3, 5, 10), (5, 10, 1), (5, 10, 10), (5, 10, 48))


class QualityOptions(Options):
    quick: bool = option(False, "CI size: the smallest NAB file and a small simulated fleet, default candidate only")
    candidates: list[str] | None = option(None, "candidates, comma-separated (" + ", ".join(CANDIDATES) + ")",
                                          parse=comma_list, show_default="all (quick: window)")
    datasets: list[str] | None = option(None, "datasets, comma-separated: NAB file names, sim, sim-hard",
                                        parse=comma_list, show_default="all (quick: one NAB file and sim)")
    seeds: int = option(1, "seeds per candidate (the spread is reported)", ge=1, le=5)
    out: Path = option(PROJECT_ROOT / ".vigil" / "benchmarks", "folder for quality.json")


@dataclass
class Dataset:
    """A topic written the user's way, its training boundary and its labelled windows."""

    name: str
    topic: str
    boundary: pd.Timestamp                  # train before, evaluate from
    windows: list[tuple[pd.Timestamp, pd.Timestamp]] | None = None  # NAB: labelled windows
    rows: int = 0
    notes: list[str] = field(default_factory=list)


# --- data into Kafka ---------------------------------------------------------------------------

def run_job(module: str, argv: list[str], what: str) -> None:
    """Run a job the way a user does (``python -m <module> ...``); RuntimeError with its last words."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", module, *argv], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")


def replay_nab(settings: VigilSettings, name: str, prefix: str) -> Dataset:
    path = NAB / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the NAB data lives in ../shared/datasets/nab (see its README); "
                                f"VIGIL_DATASETS names another datasets folder")
    frame = pd.read_csv(path, parse_dates=["timestamp"])
    topic = f"{prefix}.{path.stem.replace('_', '-')}"
    run_job("jobs.replay_file", [str(path), "--topic", topic, "--bootstrap-servers", settings.bootstrap_servers],
            f"replaying {name}")
    boundary = frame["timestamp"].iloc[int(len(frame) * NAB_TRAIN_SHARE)]
    windows = [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in
               json.loads((NAB / "anomaly_windows.json").read_text())[name]]
    return Dataset(name, topic, boundary, windows, len(frame))


def simulate(settings: VigilSettings, name: str, prefix: str, quick: bool) -> Dataset:
    from jobs import simulation

    events = 6_000 if quick else 30_000
    vehicles = 10
    topic = f"{prefix}.{name}"
    argv = ["--topic", topic, "--vehicles", str(vehicles), "--events", str(events), "--seed", "17",
            "--bootstrap-servers", settings.bootstrap_servers, "--start", "2026-01-01T00:00:00Z"]
    if name == "sim-hard":
        hard = getattr(simulation, "HARD_MODES", None)
        if hard is None:
            raise RuntimeError("the simulator has no HARD_MODES (gradual drift, stuck sensor, regime change)")
        argv += ["--failure-modes", ",".join(hard)] + list(getattr(simulation, "HARD_CLI_FLAGS", ()))
    run_job("jobs.simulate_fleet", argv, f"simulating {name}")
    span = events / vehicles * simulation.FleetSettings().interval_s
    boundary = pd.Timestamp("2026-01-01T00:00:00") + pd.Timedelta(seconds=span * SIM_TRAIN_SHARE)
    return Dataset(name, topic, boundary, None, events)


# --- one candidate -----------------------------------------------------------------------------

def train_and_score(settings: VigilSettings, data: Dataset, candidate: str, seed: int, work: Path) -> pd.DataFrame:
    """Train ``candidate`` on the dataset's training range from Kafka, score the topic in the Table
    job, and return the scored rows with labels (``label`` True = anomalous) and alarms."""
    from connectors import schema_store
    from connectors.kafka_io import read_all
    from connectors.records import outputs
    from jobs.training.trainer import TrainOptions, train_from_kafka

    name = f"{data.topic}.{candidate}.s{seed}"
    store = work / "models"
    run = settings.evolve(model__store=str(store))
    options = TrainOptions(topic=data.topic, model_name=name, end=data.boundary.isoformat() + "Z", eval_fraction=0,
                           min_rows=100, seed=seed, quiet=True, **CANDIDATES[candidate])
    started = time.monotonic()
    manifest = train_from_kafka(run, options)
    train_s = time.monotonic() - started
    secret = work / "secret"
    secret.write_text("quality-benchmark")
    out = f"{name}.{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    run_job("jobs.score_events", [
        "--input", data.topic, "--model", f"{name}@champion", "--model-store", str(store),
        "--bootstrap-servers", settings.bootstrap_servers, "--tier", "none", "--pseudonym-secret-file", str(secret),
        "--scored-topic", f"{out}.scored", "--alerts-topic", f"{out}.alerts", "--dlq-topic", f"{out}.dlq",
        "--group-id", out, "--bounded", "--from-earliest", "--checkpoint-interval", "2 s",
    ], f"scoring {data.topic} with {name}")
    score_s = time.monotonic() - started
    schema = schema_store.require(settings.bootstrap_servers, data.topic)
    contracts = outputs(schema)
    rows = pd.DataFrame([json.loads(m.value()) for m in read_all(settings.bootstrap_servers, f"{out}.scored")])
    rows["event_time"] = pd.to_datetime(rows[contracts.time])
    rows["entity"] = rows[contracts.entity]
    if data.windows is not None:
        rows["label"] = np.zeros(len(rows), bool)
        for a, b in data.windows:
            rows.loc[(rows["event_time"] >= a) & (rows["event_time"] <= b), "label"] = True
    else:
        rows["label"] = rows[contracts.label].notna()
    rows.attrs.update(train_seconds=round(train_s, 1), score_seconds=round(score_s, 1),
                      window=manifest["features"].get("window", 1), threshold=manifest["threshold"],
                      expected_far=manifest["metrics"]["expected_false_alarm_rate"]["bound"],
                      epochs=manifest["metrics"]["epochs_run"])
    return rows.sort_values(["entity", "source_partition", "source_offset"]).reset_index(drop=True)


# --- figures -----------------------------------------------------------------------------------

def alarm_flags(rows: pd.DataFrame, rule: tuple[int, int, int]) -> np.ndarray:
    """Per reading: in an alarm episode of ``rule`` (from its open event to its closing reading)."""
    from udfs.alert_rules import Hysteresis, Reading, replay

    hysteresis = Hysteresis(*rule)
    alarmed = np.zeros(len(rows), bool)
    for _, part in rows.groupby("entity", sort=False):
        index = part.index.to_numpy()
        readings = [Reading(None, float(s), int(p), int(o)) for s, p, o in
                    zip(part["score"], part["source_partition"], part["source_offset"])]
        events = replay(hysteresis, part["is_anomaly"].astype(bool).tolist(), readings)
        position = {int(o): i for i, o in enumerate(part["source_offset"])}
        opened = None
        for e in events:
            if e["status"] == "open":
                opened = position[e["source_offset"]]
            else:
                alarmed[index[opened:position[e["source_offset"]]]] = True
                opened = None
        if opened is not None:
            alarmed[index[opened:]] = True
    return alarmed


def figures(rows: pd.DataFrame, predicted: np.ndarray, data: Dataset) -> dict[str, Any]:
    test = (rows["event_time"] >= data.boundary).to_numpy()
    label, pred = rows["label"].to_numpy()[test], predicted[test]
    tp, fp = int((pred & label).sum()), int((pred & ~label).sum())
    fn, tn = int((~pred & label).sum()), int((~pred & ~label).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    caught, delays = 0, []
    windows = windows_of(rows[test].assign(pred=pred), data)
    for start, in_window in windows:
        hits = in_window[in_window["pred"]]
        if len(hits):
            caught += 1
            delays.append((hits["event_time"].iloc[0] - start).total_seconds())
    return {"readings": int(test.sum()), "anomalous": int(label.sum()),
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "precision": precision, "recall": recall,
            "false_alarm_rate": fp / (fp + tn) if fp + tn else 0.0, "missed_rate": fn / (tp + fn) if tp + fn else 0.0,
            "windows": len(windows), "windows_caught": caught,
            "median_delay_s": statistics.median(delays) if delays else None}


def windows_of(test: pd.DataFrame, data: Dataset) -> list[tuple[pd.Timestamp, pd.DataFrame]]:
    """(start, its readings) of each labelled window in the evaluated range (NAB's windows; the
    simulator's runs of labelled readings per entity)."""
    if data.windows is not None:
        return [(a, test[(test["event_time"] >= a) & (test["event_time"] <= b)])
                for a, b in data.windows if b >= data.boundary]
    out = []
    for _, part in test.groupby("entity", sort=False):
        run = (part["label"] != part["label"].shift()).cumsum()
        for _, chunk in part[part["label"]].groupby(run[part["label"]]):
            out.append((chunk["event_time"].iloc[0], chunk))
    return out


def evaluate(rows: pd.DataFrame, data: Dataset) -> dict[str, Any]:
    result = {"point": figures(rows, rows["is_anomaly"].astype(bool).to_numpy(), data),
              "hysteresis": {}, **rows.attrs}
    for rule in HYSTERESIS:
        flags = alarm_flags(rows, rule)
        result["hysteresis"]["/".join(map(str, rule))] = figures(rows, flags, data)
    return result


def pooled(per_dataset: list[dict[str, Any]], key: str) -> dict[str, float]:
    """F1 / false-alarm / missed rates over all evaluated readings of several datasets."""
    sums = {"readings": 0, "anomalous": 0, "tp": 0.0, "fp": 0.0}
    for fig in per_dataset:
        f = fig[key] if key == "point" else fig["hysteresis"][key]
        sums["readings"] += f["readings"]
        sums["anomalous"] += f["anomalous"]
        sums["tp"] += f["recall"] * f["anomalous"]
        sums["fp"] += f["false_alarm_rate"] * (f["readings"] - f["anomalous"])
    normal = sums["readings"] - sums["anomalous"]
    recall = sums["tp"] / sums["anomalous"] if sums["anomalous"] else 0.0
    precision = sums["tp"] / (sums["tp"] + sums["fp"]) if sums["tp"] + sums["fp"] else 0.0
    return {"f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "false_alarm_rate": sums["fp"] / normal if normal else 0.0, "missed_rate": 1 - recall}


def run(settings: VigilSettings, o: QualityOptions) -> int:
    from connectors.kafka_io import check_broker
    from stack import flink_home

    check_broker(settings.bootstrap_servers)
    flink_home.activate(settings)
    candidates = o.candidates or ([DEFAULT_CANDIDATE] if o.quick else list(CANDIDATES))
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; choose from {', '.join(CANDIDATES)}")
    names = o.datasets or ([*QUICK_NAB, "sim"] if o.quick else [*NAB_FILES, "sim", "sim-hard"])
    prefix = f"bench.quality.{uuid.uuid4().hex[:6]}"
    results: dict[str, Any] = {"mode": "quick" if o.quick else "full", "candidates": candidates,
                               "hysteresis": ["/".join(map(str, h)) for h in HYSTERESIS], "datasets": {},
                               "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="vigil-quality-") as tmp:
        for name in names:
            data = simulate(settings, name, prefix, o.quick) if name.startswith("sim") else replay_nab(
                settings, name, prefix)
            entry = results["datasets"][name] = {"topic": data.topic, "rows": data.rows,
                                                 "boundary": str(data.boundary), "candidates": {}}
            for candidate in candidates:
                runs = []
                for seed in range(42, 42 + o.seeds):
                    try:
                        rows = train_and_score(settings, data, candidate, seed, Path(tmp) / f"{name}-{candidate}-{seed}")
                    except Exception as exc:  # noqa: BLE001 - a candidate that cannot train is a result too
                        runs.append({"seed": seed, "error": str(exc).splitlines()[0]})
                        print(f"{name:44s} {candidate:9s} seed {seed}: cannot train: {runs[-1]['error']}",
                              flush=True)
                        continue
                    runs.append({"seed": seed, **evaluate(rows, data)})
                    p = runs[-1]["point"]
                    print(f"{name:44s} {candidate:9s} seed {seed}: F1 {p['f1']:.3f}  false alarms "
                          f"{p['false_alarm_rate']:.1%}  missed {p['missed_rate']:.1%}  windows "
                          f"{p['windows_caught']}/{p['windows']}  (train {runs[-1]['train_seconds']}s, "
                          f"score {runs[-1]['score_seconds']}s)", flush=True)
                entry["candidates"][candidate] = runs
    results["summary"] = summarise(results)
    print_summary(results["summary"])
    o.out.mkdir(parents=True, exist_ok=True)
    (o.out / "quality.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {o.out / 'quality.json'}")
    return 0


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per candidate and group of datasets (nab, sim, sim-hard): pooled figures, mean and spread over seeds."""
    groups: dict[str, list[str]] = {}
    for name in results["datasets"]:
        groups.setdefault("nab" if name.endswith(".csv") else name, []).append(name)
    summary: dict[str, Any] = {}
    for candidate in results["candidates"]:
        for group, names in groups.items():
            by_seed: dict[int, list[dict[str, Any]]] = {}
            for name in names:
                for r in results["datasets"][name]["candidates"].get(candidate, []):
                    if "error" not in r:
                        by_seed.setdefault(r["seed"], []).append(r)
            complete = [runs for runs in by_seed.values() if len(runs) == len(names)]
            if not complete:
                continue
            keys = ["point", *results["hysteresis"]]
            row = {}
            for key in keys:
                figs = [pooled(runs, key) for runs in complete]
                row[key] = {m: {"mean": float(np.mean([f[m] for f in figs])),
                                "spread": float(np.max([f[m] for f in figs]) - np.min([f[m] for f in figs]))}
                            for m in ("f1", "false_alarm_rate", "missed_rate")}
            summary[f"{candidate}/{group}"] = {"seeds": len(complete), **row}
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print("\n| candidate/data | seeds | alarm (K/N/M) | F1 | false alarms | missed |")
    print("|---|---|---|---|---|---|")
    for name, row in summary.items():
        for key, figs in row.items():
            if key == "seeds":
                continue
            spread = f" ±{figs['f1']['spread'] / 2:.3f}" if row["seeds"] > 1 else ""
            print(f"| {name} | {row['seeds']} | {'reading' if key == 'point' else key} | {figs['f1']['mean']:.3f}"
                  f"{spread} | {figs['false_alarm_rate']['mean']:.1%} | {figs['missed_rate']['mean']:.1%} |")


COMMAND = command("quality", sys.modules["benchmarks.quality"].__doc__, run, options=QualityOptions, settings_flags=("kafka.bootstrap_servers",),
                  expected_errors=(ValueError, RuntimeError, FileNotFoundError), prog="python -m benchmarks.quality")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
