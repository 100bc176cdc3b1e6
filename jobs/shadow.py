"""Compare the two models of a shadow-scoring run: agreement, alert rates, accuracy, score distributions.

    vigil score table --input telemetry --shadow telemetry@challenger     # writes telemetry.shadow
    vigil shadow --input telemetry [--from 2026-01-01T00:00:00Z] [--to ...] [--png shadow.png]

The Table job with ``--shadow`` scores every event with both models and writes one record per
scored event to ``<input>.shadow`` (connectors/records.shadow_contract): which reading, its label
where the topic has one, and each model's score, flag and version. Alerts follow ``--model`` only.
This command reads that topic (committed records) and prints, per pair of versions: events, the
share on which the two flags agree, each model's alert rate, and, where readings carry labels,
each model's precision, recall, F1 and false-alarm rate (a label other than empty/none/normal is a
fault), plus the rank correlation of the scores. ``--png`` draws the score distributions and the
figures side by side.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from connectors import schema_store
from connectors.errors import ConnectorError
from connectors.kafka_io import check_broker, read_all
from connectors.records import shadow_contract
from jobs.monitoring.metrics import confusion
from vigil.commands import Options, command, option
from vigil.settings import VigilSettings


class ShadowOptions(Options):
    input_topic: str = option("telemetry", "the topic the job scored (its schema says the time and label columns)",
                              flag="--input")
    topic: str | None = option(None, "the shadow topic the job wrote", show_default="<input>.shadow")
    start: str | None = option(None, "first event time, ISO 8601", flag="--from")
    end: str | None = option(None, "end event time, exclusive, ISO 8601", flag="--to")
    png: Path | None = option(None, "write the comparison as a picture to this PNG file", show_default="none")


def read_shadow(bootstrap: str, topic: str) -> pd.DataFrame:
    """The shadow topic's committed records as a frame (JSON values)."""
    rows = [json.loads(m.value()) for m in read_all(bootstrap, topic) if m.value()]
    return pd.DataFrame(rows)


def in_range(frame: pd.DataFrame, time_col: str | None, start: str | None, end: str | None) -> pd.DataFrame:
    if not (start or end):
        return frame
    if not time_col or time_col not in frame:
        raise ValueError("--from/--to need the topic's event time, and its schema has none")
    times = pd.to_datetime(frame[time_col], utc=True, errors="coerce")
    keep = pd.Series(True, index=frame.index)
    if start:
        keep &= times >= pd.Timestamp(start)
    if end:
        keep &= times < pd.Timestamp(end)
    return frame[keep]


def compare(frame: pd.DataFrame, label_col: str | None) -> list[dict[str, Any]]:
    """Figures per (model_version, shadow_model_version): see the module docstring."""
    out = []
    for (version, shadow), part in frame.groupby(["model_version", "shadow_model_version"], dropna=False):
        both = part.dropna(subset=["is_anomaly", "shadow_is_anomaly"])
        main, other = both["is_anomaly"].astype(bool), both["shadow_is_anomaly"].astype(bool)
        scores = part[["score", "shadow_score"]].dropna()
        row: dict[str, Any] = {
            "model": version, "shadow": shadow, "events": int(len(part)), "compared": int(len(both)),
            "agreement": float((main == other).mean()) if len(both) else None,
            "alert_rate": float(main.mean()) if len(both) else None,
            "shadow_alert_rate": float(other.mean()) if len(both) else None,
            "only_model": int((main & ~other).sum()), "only_shadow": int((other & ~main).sum()),
            "score_rank_correlation": (float(scores["score"].corr(scores["shadow_score"], method="spearman"))
                                       if len(scores) > 2 else None),
        }
        if label_col and label_col in part and part[label_col].notna().any():
            labels = both[label_col].tolist()
            row["model_accuracy"] = confusion(main.tolist(), labels).figures()
            row["shadow_accuracy"] = confusion(other.tolist(), labels).figures()
        out.append(row)
    return out


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_report(rows: list[dict[str, Any]], topic: str) -> None:
    for r in rows:
        print(f"{topic}: {r['model']} (scoring) vs {r['shadow']} (shadow), {r['events']} events")
        print(f"  flags agree on      {_fmt(r['agreement'])} of {r['compared']} "
              f"(only {r['model']}: {r['only_model']}, only {r['shadow']}: {r['only_shadow']})")
        print(f"  alert rate          {_fmt(r['alert_rate'])} vs {_fmt(r['shadow_alert_rate'])}")
        print(f"  score rank corr.    {_fmt(r['score_rank_correlation'])}")
        if "model_accuracy" in r:
            a, b = r["model_accuracy"], r["shadow_accuracy"]
            print(f"  against labels      {a['faults']} faults, {a['normal']} normal readings")
            for name in ("precision", "recall", "f1", "false_alarm_rate"):
                print(f"    {name:<17} {_fmt(a[name])} vs {_fmt(b[name])}")
        else:
            print("  against labels      no labelled readings in range")


def draw(frame: pd.DataFrame, rows: list[dict[str, Any]], path: Path) -> None:
    """Score distributions (log scale) of both models, and their figures as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    r = rows[0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for column, name in (("score", f"scoring: {r['model']}"), ("shadow_score", f"shadow: {r['shadow']}")):
        values = frame[column].dropna().to_numpy(dtype=float)
        values = values[values > 0]
        if len(values):
            bins = np.logspace(np.log10(values.min()), np.log10(values.max()) + 1e-9, 50)
            left.hist(values, bins=bins, alpha=0.55, label=name)
    left.set_xscale("log")
    left.set_xlabel("score (higher: more anomalous)")
    left.set_ylabel("events")
    left.set_title("score distributions")
    left.legend()
    names = ["alert rate"]
    model = [r["alert_rate"] or 0]
    shadow = [r["shadow_alert_rate"] or 0]
    if "model_accuracy" in r:
        for key in ("precision", "recall", "false_alarm_rate"):
            names.append(key.replace("_", " "))
            model.append(r["model_accuracy"][key] or 0)
            shadow.append(r["shadow_accuracy"][key] or 0)
    x = np.arange(len(names))
    right.bar(x - 0.2, model, 0.4, label=r["model"])
    right.bar(x + 0.2, shadow, 0.4, label=r["shadow"])
    right.set_xticks(x, names)
    right.set_ylim(0, 1)
    agree = f"{100 * r['agreement']:.1f}%" if r["agreement"] is not None else "-"
    right.set_title(f"{r['events']} events; the two models' flags agree on {agree}")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(settings: VigilSettings, o: ShadowOptions) -> int:
    bootstrap = settings.bootstrap_servers
    check_broker(bootstrap)
    schema = schema_store.require(bootstrap, o.input_topic)
    contract = shadow_contract(schema)
    topic = o.topic or f"{o.input_topic}.shadow"
    frame = read_shadow(bootstrap, topic)
    if frame.empty:
        raise ValueError(f"{topic} holds no records: score with `vigil score table --input {o.input_topic} "
                         f"--shadow <model@alias>` first")
    missing = [c for c in ("score", "is_anomaly", "model_version", "shadow_score", "shadow_is_anomaly",
                           "shadow_model_version") if c not in frame]
    if missing:
        raise ValueError(f"{topic} is not a shadow topic: its records have no {', '.join(missing)}")
    from connectors.avro_serde import roles

    role = roles(schema)
    time_col = role["time"] if role["time"] in contract.names else None
    frame = in_range(frame, time_col, o.start, o.end)
    if frame.empty:
        raise ValueError(f"{topic} has no records between {o.start or 'the start'} and {o.end or 'the end'}")
    rows = compare(frame, role["label"])
    print_report(rows, topic)
    if o.png:
        draw(frame, rows, o.png)
        print(f"picture: {o.png}")
    return 0


COMMAND = command("shadow", __doc__, run, options=ShadowOptions, settings_flags=("kafka.bootstrap_servers",),
                  expected_errors=(ConnectorError, ValueError), prog="vigil shadow")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
