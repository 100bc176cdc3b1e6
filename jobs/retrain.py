"""The continuous retraining loop: train a challenger on a recent window of the Kafka log, evaluate it
against the champion on held-out readings, promote it when the policy holds; every decision recorded.

    vigil retrain --topic telemetry --last-hours 24 --every 1h    # keeps running, one cycle an hour
    vigil retrain --topic telemetry --once                        # one cycle, then exit

One cycle:

1. the window: the last ``--last-hours`` of event time up to the topic's newest record (record
   timestamps, which Vigil's producers set to the event time); its newest ``--holdout-fraction``
   (by time) is the held-out range, the rest the training range;
2. a challenger is trained on the training range exactly as ``vigil train`` does (labelled
   failures left out, and with ``--leave-out-flagged`` the readings the scoring job flagged;
   ``--eval-fraction 0``: the held-out range is the evaluation) and published
   as the model's next version with alias ``challenger`` (a model without a champion gets its
   first version as ``champion`` and the cycle ends there);
3. champion and challenger score the held-out readings (each reading in its entity's context, as
   the jobs score it); readings either model was trained on (the partition/offset ranges in its
   manifest's lineage) are left out; their figures: false-alarm rate on the normal readings,
   precision/recall/F1 where faults are labelled, drift (max PSI against each one's baseline);
4. the policy (jobs/monitoring/policy.py; docs/monitoring.md) decides: promoted, ``champion``
   moves to the challenger through the registry (atomic, recorded, refused if the champion moved
   meanwhile); refused, the challenger alias is re-pointed at the same version so that the
   registry's history holds the decision too. Either way the decision and both models' figures
   go to ``--events-topic`` as a ``retrain`` model-event.

Running scoring jobs pick a promoted champion up without restart (``--model-refresh-seconds``).
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sys
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from connectors import schema_store
from connectors.avro_serde import roles
from connectors.errors import ConnectorError, SchemaError
from connectors.kafka_io import (PartitionRange, check_broker, client_config, consume_ranges, create_topic,
                                 end_offsets)
from connectors.model_registry import CHALLENGER, CHAMPION, ModelRegistry, RegistryError, Version
from connectors.model_store import ModelStoreError
from udfs.drift import drift
from jobs.monitoring.policy import Decision, Policy, decide, figures
from jobs.training.trainer import OFFSET, PARTITION, TrainOptions, entity_pseudonyms, read_topic, train_from_kafka
from udfs.feature_set import FeatureError, context_from_frame, time_millis
from vigil.commands import Options, comma_list, command, option
from vigil.settings import VigilSettings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def duration_seconds(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``1d`` or plain seconds."""
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected a duration such as 90s, 30m, 1h or 1d, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class RetrainOptions(Options):
    """The window, the schedule, the policy and the training settings of each challenger."""

    topic: str = option("telemetry", "Kafka topic to train on and evaluate with (its schema registered)")
    model_name: str | None = option(None, "registry name of the model", show_default="the topic")
    last_hours: float = option(24.0, "the window: this many hours of event time up to the topic's newest record",
                               gt=0)
    holdout_fraction: float = option(0.2, "the newest share of the window (by time) kept for the evaluation",
                                     gt=0, lt=1)
    once: bool = option(False, "run one cycle and exit")
    every: float = option(3600.0, "time between the starts of two cycles (90s, 30m, 1h, 1d)",
                          parse=duration_seconds, show_default="1h")
    events_topic: str | None = option(None, "topic the decisions go to (as retrain events)",
                                      show_default="<topic>.model-events")
    drift_features: list[str] | None = option(None, "policy: the features whose PSI counts for drift", parse=comma_list,
                                              show_default="every feature of the model")
    drift_threshold: float = option(0.2, "policy: the challenger's max PSI on the held out readings must be below "
                                         "this", gt=0)
    far_tolerance: float = option(0.001, "policy: the challenger's false alarm rate may exceed the champion's by "
                                         "this much", ge=0)
    precision_tolerance: float = option(0.02, "policy: the challenger's precision may be below the champion's by "
                                              "this much", ge=0)
    recall_tolerance: float = option(0.02, "policy: the challenger's recall may be below the champion's by this "
                                           "much", ge=0)
    min_faults: int = option(20, "policy: fewest fault labelled held out readings to compare precision and recall",
                             ge=1)
    min_holdout: int = option(100, "fewest held out readings to decide on (else the cycle refuses)", ge=1)
    leave_out_flagged: bool = option(False, "challenger training: leave out the readings the scoring job flagged "
                                            "(<topic>.scored), like labelled failures; off by default, because "
                                            "after a drift the champion flags the new normal the challenger must "
                                            "learn")
    epochs: int = option(300, "challenger training: most epochs (early stopping ends sooner)", ge=1)
    members: int = option(3, "challenger training: models in the ensemble", ge=1, le=10)
    window: int = option(8, "challenger training: readings per entity the model reads", ge=2)
    patience: int = option(10, "challenger training: epochs without validation improvement before stopping", ge=1)
    min_rows: int = option(200, "challenger training: fewest training readings accepted", ge=10)
    seed: int = option(42, "challenger training: random seed")
    quiet: bool = option(False, "no progress bars")


def iso(ms: float) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def newest_timestamp(bootstrap: str, topic: str) -> int | None:
    """The largest record timestamp among the last records of each partition (epoch ms)."""
    ranges = [PartitionRange(p, max(low, high - 20), high) for p, (low, high) in end_offsets(bootstrap, topic).items()
              if high > low]
    stamps = [msg.timestamp()[1] for msg in consume_ranges(bootstrap, topic, ranges)]
    return max(stamps) if stamps else None


def trained_on(manifest: dict[str, Any], topic: str, frame: pd.DataFrame) -> np.ndarray:
    """Rows of ``frame`` (from ``topic``) inside the partition/offset ranges the model was trained on."""
    kafka = ((manifest.get("training") or {}).get("sources") or {}).get("kafka") or {}
    inside = np.zeros(len(frame), bool)
    if kafka.get("topic") != topic:
        return inside
    part, off = frame[PARTITION].to_numpy(), frame[OFFSET].to_numpy()
    for r in kafka.get("ranges") or ():
        inside |= (part == r["partition"]) & (off >= r["start"]) & (off < r["end"])
    return inside


def score_held_out(registry: ModelRegistry, version: Version, frame: pd.DataFrame, role: dict[str, Any],
                   entities: Callable[[], pd.Series] | None = None,
                   ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray] | str:
    """(manifest, scores, flags as bool, scorable mask) of every row of ``frame``, or why the version cannot
    score it. ``entities()``: the rows' entity pseudonyms, for a version calibrated per entity."""
    from udfs.anomaly_score import LoadedModel

    folder, manifest = registry.fetch(version)
    names = list(manifest["features"]["names"])
    missing = [n for n in names if n not in frame]
    if missing:
        return f"{version.ref} reads {missing}, which the topic's records lack"
    model = LoadedModel(folder, manifest, "numpy")
    ctx = context_from_frame(frame, names, role["entity"], role["time"], [PARTITION, OFFSET], model.window)
    keys = entities().to_numpy(dtype=object) if model.thresholds and entities is not None else None
    scores, flags, status = model.score_context(ctx, keys)
    scorable = np.array([f is not None for f in flags]) & ~status.warming
    return manifest, scores, np.array([bool(f) for f in flags]), scorable


def cycle(settings: VigilSettings, o: RetrainOptions) -> dict[str, Any]:
    """One retraining cycle (the module docstring); returns the decision event."""
    bootstrap = settings.bootstrap_servers
    check_broker(bootstrap)
    schema = schema_store.require(bootstrap, o.topic)
    role = roles(schema)
    name = o.model_name or o.topic
    newest = newest_timestamp(bootstrap, o.topic)
    if newest is None:
        raise FeatureError(f"topic {o.topic!r} holds no records to train on")
    span = o.last_hours * 3_600_000
    start, cut, end = newest - span, newest - span * o.holdout_fraction, newest + 1
    print(f"1/4 window {iso(start)} .. {iso(newest)}: training on {iso(start)} .. {iso(cut)}, held out "
          f"{iso(cut)} .. {iso(newest)}", flush=True)
    registry = ModelRegistry(settings.model_store, settings.s3 if settings.s3_for(settings.model_store) else None)
    try:
        champion: Version | None = registry.resolve(f"{name}@{CHAMPION}")
    except RegistryError:
        champion = None
    print(f"2/4 training the challenger of {name} (champion: {champion.ref if champion else 'none'})", flush=True)
    # the challenger is calibrated as the champion is: per entity or for the fleet
    rule = registry.manifest(champion).get("threshold_rule", {}) if champion else {}
    calibration = {"threshold_per": rule.get("per", "fleet")} | (
        {"entity_min_readings": rule["entity_min_readings"]} if "entity_min_readings" in rule else {})
    train = TrainOptions(topic=o.topic, model_name=name, alias=CHALLENGER if champion else CHAMPION,
                         reason=f"retrain: window {iso(start)} .. {iso(cut)}", start=iso(start), end=iso(cut),
                         eval_fraction=0, leave_out_flagged=f"{o.topic}.scored" if o.leave_out_flagged else None,
                         epochs=o.epochs, members=o.members, window=o.window, patience=o.patience,
                         min_rows=o.min_rows, seed=o.seed, quiet=o.quiet, **calibration)
    published = train_from_kafka(settings, train)
    state = registry.state(name)
    challenger = state.versions[int(published["number"])]
    window = {"from": iso(start), "to": iso(newest), "holdout_from": iso(cut), "last_hours": o.last_hours,
              "holdout_fraction": o.holdout_fraction}
    base = {"kind": "retrain", "model": name, "challenger": challenger.ref, "window": window}
    if champion is None:
        print(f"4/4 {challenger.ref} is the first version of {name}: published as champion", flush=True)
        return {**base, "decision": "first", "champion": challenger.ref,
                "detail": "no champion yet: the first version became champion"}

    frame, _, _ = read_topic(bootstrap, TrainOptions(topic=o.topic, start=iso(start), end=iso(end), quiet=o.quiet),
                             schema)
    if frame.empty:
        raise FeatureError(f"no records in the window of {o.topic!r}")
    times = time_millis(frame[role["time"]]) if role["time"] else frame[PARTITION].to_numpy() * 0.0
    held = times >= cut
    labels = frame[role["label"]] if role["label"] and role["label"] in frame else None
    results: dict[str, Any] = {}
    pseudonyms = functools.cache(lambda: entity_pseudonyms(settings, frame[role["entity"]]))
    for which, version in (("champion", champion), ("challenger", challenger)):
        results[which] = score_held_out(registry, version, frame, role, pseudonyms)
        if not isinstance(results[which], str):
            held &= ~trained_on(results[which][0], o.topic, frame)
    usable = held.copy()
    for r in results.values():
        if not isinstance(r, str):
            usable &= r[3]
    rows = int(usable.sum())
    print(f"3/4 evaluating on {rows} held-out readings ({int(held.sum())} in the held-out range not trained on by "
          f"either)", flush=True)
    policy = Policy(drift_psi=o.drift_threshold, far_tolerance=o.far_tolerance,
                    precision_tolerance=o.precision_tolerance, recall_tolerance=o.recall_tolerance,
                    min_faults=o.min_faults)
    figs: dict[str, Any] = {}
    for which, r in results.items():
        if isinstance(r, str):
            figs[which] = {"error": r}
            continue
        manifest, scores, flags, _ = r
        moved = drift(manifest["baseline"], {n: frame.loc[usable, n].to_numpy(dtype=float, na_value=np.nan)
                                             for n in manifest["baseline"]["features"]}, o.drift_features) \
            if "baseline" in manifest else None
        figs[which] = figures(scores[usable], flags[usable],
                              None if labels is None else labels[usable].tolist(), moved)
    if rows < o.min_holdout:
        decision = Decision(False, [{"check": "holdout", "ok": False,
                                     "detail": f"{rows} held-out readings (< {o.min_holdout}): no decision"}])
    elif "error" in figs["challenger"]:
        decision = Decision(False, [{"check": "challenger", "ok": False, "detail": figs["challenger"]["error"]}])
    else:
        decision = decide(None if "error" in figs["champion"] else figs["champion"], figs["challenger"], policy)
    verdict = "promoted" if decision.promote else "refused"
    detail = f"{verdict} {challenger.ref} over {champion.ref} on {rows} held-out readings: {decision.summary}"
    recorded = {"figures": {"champion": figs["champion"], "challenger": figs["challenger"]}, "checks": decision.checks,
                "policy": policy.to_dict(), "window": window}
    if decision.promote:
        registry.set_alias(name, CHAMPION, challenger.number, reason=f"retrain: {detail}", figures=recorded,
                           expect=champion.number)
    else:
        registry.set_alias(name, CHALLENGER, challenger.number, reason=f"retrain: {detail}", figures=recorded)
    print(f"4/4 {detail}", flush=True)
    return {**base, "decision": verdict, "champion": (challenger if decision.promote else champion).ref,
            "previous_champion": champion.ref, "detail": detail, "holdout_rows": rows, **recorded}


def record(settings: VigilSettings, topic: str, event: dict[str, Any]) -> None:
    from confluent_kafka import Producer

    create_topic(settings.bootstrap_servers, topic)
    producer = Producer({**client_config(settings.bootstrap_servers), "acks": "all", "enable.idempotence": True})
    event = {**event, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    producer.produce(topic, key=event["model"].encode(), value=json.dumps(event, default=str).encode())
    if producer.flush(30):
        raise ConnectorError(f"the decision could not be written to {topic!r}")


EXPECTED = (ConnectorError, SchemaError, FeatureError, ModelStoreError, ValueError)


def run(settings: VigilSettings, o: RetrainOptions) -> int:
    events_topic = o.events_topic or f"{o.topic}.model-events"
    while True:
        started = time.monotonic()
        try:
            event = cycle(settings, o)
            record(settings, events_topic, event)
            print(f"decision recorded in the registry's history and on {events_topic}", flush=True)
        except EXPECTED as exc:
            if o.once:
                raise
            print(f"error: this cycle failed: {exc}", file=sys.stderr, flush=True)
        if o.once:
            return 0
        try:   # Ctrl-C between cycles ends the loop (0); during a cycle it abandons it ("interrupted", 130)
            wait = max(0.0, o.every - (time.monotonic() - started))
            print(f"next cycle at {iso((time.time() + wait) * 1000)}", flush=True)
            time.sleep(wait)
        except KeyboardInterrupt:
            return 0


COMMAND = command("retrain", __doc__, run, options=RetrainOptions,
                  settings_flags=("kafka.bootstrap_servers", "model.store"), expected_errors=EXPECTED,
                  prog="python -m jobs.retrain")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
