"""Per-minute model metrics from scored records: volume, anomaly rate, score quantiles, dead letters,
input drift against the training baseline (PSI) and, where labels arrive (in the scored records or
later on a label topic), precision/recall/false alarms.

Pure: no Kafka here. ``Monitor`` is fed parsed records (``add_scored``, ``add_dead_letter``,
``add_label``) and ``close()`` returns the metrics records of the minutes that are complete and the
model-events of the thresholds crossed; ``jobs/monitor.py`` is the consumer loop around it.

Drift is the population stability index (PSI) of a minute's readings against the training baseline
in the version's manifest; udfs/drift.py defines both (a scoring UDF computes the same PSI for its
``drift_max_psi`` gauge).
"""
from __future__ import annotations

import bisect
import datetime as dt
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from udfs.drift import psi_of_counts, summarise_drift

MINUTE_MS = 60_000
NORMAL_LABELS = frozenset({"", "none", "normal"})


def _finite(value: Any) -> bool:
    """A real number (not a bool, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- labels -------------------------------------------------------------------------------------

LABEL_FIELDS = ("entity", "time", "label")   # a label topic's record: which reading, and what it was
_UNLABELLED = object()                          # a reading no label speaks of (None is a label: normal)


def is_fault(label: Any) -> bool:
    """A label names a fault unless it is null, empty, ``none`` or ``normal`` (any case): the
    simulator writes null for normal readings and the failure mode otherwise."""
    return label is not None and str(label).strip().lower() not in NORMAL_LABELS


@dataclass
class Confusion:
    """Counts of flagged/not flagged against fault/normal labels."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, flagged: bool, fault: bool) -> None:
        if fault:
            self.tp += flagged
            self.fn += not flagged
        else:
            self.fp += flagged
            self.tn += not flagged

    def __iadd__(self, other: Confusion) -> Confusion:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
        return self

    @property
    def faults(self) -> int:
        return self.tp + self.fn

    @property
    def normal(self) -> int:
        return self.fp + self.tn

    def figures(self) -> dict[str, Any]:
        """Counts and rates; a rate is None where its denominator is 0 (no faults: no recall)."""
        def ratio(a: int, b: int) -> float | None:
            return a / b if b else None

        precision, recall = ratio(self.tp, self.tp + self.fp), ratio(self.tp, self.faults)
        f1 = (2 * precision * recall / (precision + recall) if precision is not None and recall is not None
              and precision + recall else (0.0 if precision is not None and recall is not None else None))
        return {"faults": self.faults, "normal": self.normal, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "tn": self.tn, "precision": precision, "recall": recall, "f1": f1,
                "false_alarm_rate": ratio(self.fp, self.normal)}


def confusion(flags: Iterable[bool], labels: Iterable[Any]) -> Confusion:
    out = Confusion()
    for flagged, label in zip(flags, labels):
        out.add(bool(flagged), is_fault(label))
    return out


def entity_of(value: Any) -> str | None:
    """An entity as matched between scored records and labels: a non-empty string or an integer id
    (as its text); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text or None


def label_record_problem(record: Any) -> str | None:
    """Why a label-topic record is not ``{"entity": ..., "time": ..., "label": ...}`` (None: it is).
    ``label`` must be there: null (like ``none`` or ``normal``) says the reading was normal."""
    if not isinstance(record, Mapping):
        return f"not a JSON object but {type(record).__name__}"
    missing = [name for name in LABEL_FIELDS if name not in record]
    if missing:
        return f"lacks {', '.join(repr(n) for n in missing)} (a label record is {{\"entity\", \"time\", \"label\"}})"
    if entity_of(record["entity"]) is None:
        return f"entity {record['entity']!r} is not a non-empty string or an integer"
    if epoch_ms(record["time"]) is None:
        return f"time {record['time']!r} is not an ISO-8601 time or epoch milliseconds"
    if record["label"] is not None and not isinstance(record["label"], str):
        return f"label {record['label']!r} is not a string or null"
    return None


# --- times --------------------------------------------------------------------------------------

def epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds of an ISO-8601 time as Flink's json format writes it (no zone = UTC; ``Z``
    or an offset accepted), an epoch-millisecond number, or a datetime; None when unparseable."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        stamp = value
    else:
        text = str(value).strip().replace(" ", "T", 1)
        try:
            stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return int(stamp.timestamp() * 1000)


def iso_minute(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the aggregation ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """When a model-event is written, and how much data a figure needs before it counts."""

    drift_psi: float = 0.2            # max PSI of a minute above this: drift
    min_events: int = 100             # fewest scored readings of a minute for its PSI
    max_false_alarm_rate: float = 0.02  # rolling false-alarm rate above this: an accuracy event
    min_recall: float = 0.5           # rolling recall below this: an accuracy event
    min_normal: int = 200             # fewest normal labelled readings in the rolling window for the false-alarm rate
    min_faults: int = 20              # fewest fault readings in the rolling window for recall
    rolling_minutes: int = 10         # minutes in the rolling precision/recall window
    persist_minutes: int = 2          # consecutive minutes across (or back across) a threshold before an event


@dataclass(frozen=True)
class ModelInfo:
    """What the monitor knows of a model version: its baseline, label, time and entity columns."""

    version: str
    baseline: dict[str, Any] | None
    label: str | None
    time: str
    note: str | None = None          # why there is no baseline (an older manifest, an unknown version)
    entity: str | None = None        # the scored records' entity column (``<entity>_pseudonym``)


@dataclass
class _Bucket:
    events: int = 0
    anomalies: int = 0
    unscored: int = 0
    scores: list[float] = field(default_factory=list)
    bins: dict[str, list[int]] = field(default_factory=dict)   # readings per baseline bin, per feature
    labelled: bool = False
    counts: Confusion = field(default_factory=Confusion)
    # with a label topic: (entity, event time, flag or None, in-event label or _UNLABELLED) of each
    # reading, matched against the topic's labels when the minute closes
    readings: list[tuple[str, int, bool | None, Any]] = field(default_factory=list)


class Monitor:
    """Per (model version, event-time minute) aggregation of scored records and dead letters.

    ``info(version)`` says what is known of a version (called once per version). A minute is
    complete once event time has passed its end by ``lateness_ms``: ``close()`` returns its
    records. Event time is the largest seen, or, when records say which ``source`` (partition)
    they come from, the smallest of the sources' largest (a partition read behind the others
    holds the minutes back, as a Flink watermark does); ``close(idle=...)`` leaves out sources
    idle since before ``idle`` (a wall-clock reading the caller passes with each record).
    ``close(final=True)`` closes every open minute. A record of a minute already closed is counted
    in ``late`` and otherwise left out. ``drift_features``: the features whose PSI counts for max PSI
    and drift events (PSI is reported for every feature either way).

    ``label_topic``: labels also come on their own (``add_label``), matched to the readings by
    (entity, exact event time) when the reading's minute closes, so a label may come before or after
    its reading, as long as it comes before the minute is published; it takes the place of the
    reading's in-event label (it is later knowledge). Labels do not move event time. A label for a
    minute already published is counted in ``label_counts["late"]`` and left out; one that matches no
    reading in ``unmatched``; one that is not a label record in ``malformed``.
    """

    def __init__(self, info: Callable[[str], ModelInfo], thresholds: Thresholds = Thresholds(),
                 lateness_ms: int = 30_000, drift_features: Sequence[str] | None = None,
                 label_topic: bool = False) -> None:
        self.info_of = info
        self.label_topic = label_topic
        self.labels: dict[int, dict[tuple[str, int], Any]] = {}   # minute -> (entity, ms) -> label, from the topic
        self.label_counts = {"matched": 0, "unmatched": 0, "late": 0, "malformed": 0}
        self.label_problem: str | None = None   # why the first malformed label record was (for the log)
        self.drift_features = list(drift_features) if drift_features else None
        self.thresholds = thresholds
        self.lateness_ms = lateness_ms
        self.models: dict[str, ModelInfo] = {}
        self.buckets: dict[tuple[int, str], _Bucket] = {}
        self.dead: dict[int, int] = {}
        self.closed_until = -math.inf   # minutes before this are closed
        self.max_time = -math.inf
        self.source_time: dict[Any, tuple[int, float]] = {}   # source -> (largest event time, last seen)
        self.late = 0
        self.malformed = 0
        self.rolling: dict[str, deque[tuple[int, Confusion]]] = {}
        self.raised: dict[tuple[str, str], bool] = {}
        self.streak: dict[tuple[str, str], int] = {}   # consecutive minutes on the other side of the threshold
        self.notes: list[str] = []      # one line per version without a baseline (for the log)

    def model(self, version: str) -> ModelInfo:
        if version not in self.models:
            self.models[version] = info = self.info_of(version)
            if info.baseline is None:
                self.notes.append(f"{version}: no baseline ({info.note or 'its manifest has none'}); drift is "
                                  f"not computed for it")
        return self.models[version]

    def add_scored(self, record: Mapping[str, Any], source: Any = None, seen: float = 0.0,
                   key: Any = None) -> None:
        """A scored record; ``key``: its Kafka key, the entity when the record has no entity column."""
        if not isinstance(record, Mapping):
            self.malformed += 1
            return
        version = str(record.get("model_version") or "unknown")
        info = self.model(version)
        ms = epoch_ms(record.get(info.time))
        minute = self._open_minute(ms)
        if minute is None:
            return
        self.max_time = max(self.max_time, ms)
        if source is not None:
            self.source_time[source] = (max(ms, self.source_time.get(source, (ms, seen))[0]), seen)
        bucket = self.buckets.setdefault((minute, version), _Bucket())
        bucket.events += 1
        score = record.get("score")
        if _finite(score):
            bucket.scores.append(float(score))
        else:
            bucket.unscored += 1
        flagged = record.get("is_anomaly") is True
        bucket.anomalies += flagged
        if info.baseline is not None:   # counted into the baseline's bins at once: memory stays small
            for name, fb in info.baseline["features"].items():
                value = record.get(name)
                if _finite(value):
                    counts = bucket.bins.get(name)
                    if counts is None:
                        counts = bucket.bins[name] = [0] * (len(fb["edges"]) + 1)
                    counts[bisect.bisect_right(fb["edges"], value)] += 1
        in_event = record.get(info.label) if info.label and info.label in record else _UNLABELLED
        flag = None if record.get("is_anomaly") is None else flagged   # None: warming up, in no count
        entity = entity_of(record.get(info.entity)) if info.entity else None
        entity = entity or entity_of(key.decode(errors="replace") if isinstance(key, bytes) else key)
        if self.label_topic and entity is not None:
            bucket.readings.append((entity, ms, flag, in_event))
        elif in_event is not _UNLABELLED and flag is not None:
            bucket.labelled = True
            bucket.counts.add(flag, is_fault(in_event))

    def add_label(self, record: Any) -> None:
        """A label-topic record ``{"entity", "time", "label"}``: what the entity's reading at that event
        time was. The last one read for a reading counts. See the class docstring for the rule."""
        problem = label_record_problem(record)
        if problem is not None:
            self.label_counts["malformed"] += 1
            self.label_problem = self.label_problem or problem
            return
        ms = epoch_ms(record["time"])
        minute = ms - ms % MINUTE_MS
        if minute < self.closed_until:
            self.label_counts["late"] += 1
            return
        self.labels.setdefault(minute, {})[(entity_of(record["entity"]), ms)] = record["label"]

    def malformed_label(self, problem: str) -> None:
        """A label-topic record that could not even be read (not JSON)."""
        self.label_counts["malformed"] += 1
        self.label_problem = self.label_problem or problem

    def label_summary(self) -> dict[str, int]:
        """The label counts so far, labels still waiting for their reading counted as unmatched (at the
        end of a run they never met it)."""
        waiting = sum(len(labels) for labels in self.labels.values())
        return {**self.label_counts, "unmatched": self.label_counts["unmatched"] + waiting}

    def add_dead_letter(self, record: Mapping[str, Any]) -> None:
        minute = self._open_minute(epoch_ms(record.get("source_timestamp")) if isinstance(record, Mapping) else None)
        if minute is not None:
            self.dead[minute] = self.dead.get(minute, 0) + 1

    def _open_minute(self, ms: int | None) -> int | None:
        """The minute a record at ``ms`` counts in; None (counted as malformed or late) when it has no
        time or its minute was already published."""
        if ms is None:
            self.malformed += 1
            return None
        minute = ms - ms % MINUTE_MS
        if minute < self.closed_until:
            self.late += 1
            return None
        return minute

    def expect(self, source: Any, seen: float = 0.0) -> None:
        """A source that has records to come (as of ``seen``): minutes wait for it until it is idle."""
        self.source_time[source] = (self.source_time.get(source, (-math.inf, seen))[0], seen)

    def watermark(self, idle: float | None = None) -> float:
        """The event time (ms) minutes are complete against (see the class docstring)."""
        active = [t for t, seen in self.source_time.values() if idle is None or seen >= idle]
        return min(active) if active else (self.max_time if idle is None or not self.source_time else -math.inf)

    def close(self, final: bool = False, idle: float | None = None,
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(metrics records, model-events) of every minute now complete, oldest first."""
        mark = self.watermark(idle)
        if final:
            until = math.inf
        elif math.isfinite(mark):
            until = mark - self.lateness_ms - MINUTE_MS + 1   # minute m is complete when m + 60 s + lateness <= mark
        else:
            return [], []
        minutes = sorted({m for m, _ in self.buckets if m < until} | {m for m in self.dead if m < until})
        metrics: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for minute in minutes:
            versions = sorted(v for m, v in self.buckets if m == minute)
            buckets = {v: self.buckets.pop((minute, v)) for v in versions}
            scored_total = sum(b.events for b in buckets.values())
            dead = self.dead.pop(minute, 0)
            dlq = {"count": dead, "rate": dead / (dead + scored_total) if dead + scored_total else None}
            labels, used = self.labels.pop(minute, {}), set()
            matched = {v: self._match(b, labels, used) for v, b in buckets.items()}
            self.label_counts["matched"] += len(used)
            self.label_counts["unmatched"] += len(labels) - len(used)
            if not versions:
                metrics.append({"model_version": None, "minute": iso_minute(minute), "minute_ms": minute,
                                "events": 0, "dlq": dlq})
            for version in versions:
                record, crossed = self._summarise(minute, version, buckets[version], dlq)
                if self.label_topic:
                    record["label_topic"] = {"matched": matched[version], "unmatched": len(labels) - len(used),
                                             "late": self.label_counts["late"]}
                metrics.append(record)
                events.extend(crossed)
        if minutes:
            self.closed_until = max(self.closed_until, minutes[-1] + MINUTE_MS)
        for minute in [m for m in self.labels if m < self.closed_until]:   # minutes passed without readings
            self.label_counts["unmatched"] += len(self.labels.pop(minute))
        return metrics, events

    def _match(self, b: _Bucket, labels: dict[tuple[str, int], Any], used: set[tuple[str, int]]) -> int:
        """Count ``b``'s readings against their labels, a topic label before the in-event one; the
        number of its readings labelled by the topic (``used``: the topic labels that found a reading)."""
        matched = 0
        for entity, ms, flag, in_event in b.readings:
            label = labels.get((entity, ms), _UNLABELLED)
            if label is not _UNLABELLED:
                matched += 1
                used.add((entity, ms))
            else:
                label = in_event
            if label is not _UNLABELLED and flag is not None:
                b.labelled = True
                b.counts.add(flag, is_fault(label))
        b.readings = []
        return matched

    def _summarise(self, minute: int, version: str, b: _Bucket, dlq: dict[str, Any],
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        t, info = self.thresholds, self.models[version]
        scores = np.asarray(b.scores)
        record: dict[str, Any] = {
            "model_version": version, "minute": iso_minute(minute), "minute_ms": minute,
            "events": b.events, "anomalies": b.anomalies, "anomaly_rate": b.anomalies / b.events,
            "unscored": b.unscored,
            "score": {f"p{q}": float(np.quantile(scores, q / 100)) for q in (50, 90, 99)} if len(scores) else None,
            "dlq": dlq,
        }
        events: list[dict[str, Any]] = []
        if info.baseline is None:
            record["drift"] = {"baseline": False, "note": info.note or "the model's manifest has no baseline"}
        elif b.events < t.min_events:
            record["drift"] = {"baseline": True, "max_psi": None, "threshold": t.drift_psi,
                               "note": f"{b.events} readings (< {t.min_events}): too few for PSI"}
        else:
            figures = summarise_drift({name: psi_of_counts(fb, b.bins.get(name, ()))
                                       for name, fb in info.baseline["features"].items()}, self.drift_features)
            record["drift"] = {"baseline": True, **figures, "threshold": t.drift_psi}
            if figures["max_psi"] is not None:
                events += self._crossing(version, "drift", "max_psi", minute, figures["max_psi"] > t.drift_psi,
                                         {"max_psi": figures["max_psi"], "feature": figures["max_feature"],
                                          "psi": figures["psi"]}, t.drift_psi)
        if b.labelled:
            window = self.rolling.setdefault(version, deque())
            window.append((minute, b.counts))
            while window and window[0][0] <= minute - t.rolling_minutes * MINUTE_MS:
                window.popleft()
            total = Confusion()
            for _, counts in window:
                total += counts
            rolling = total.figures()
            record["labels"] = b.counts.figures()
            record["rolling"] = {"minutes": t.rolling_minutes, **rolling}
            if total.normal >= t.min_normal and rolling["false_alarm_rate"] is not None:
                events += self._crossing(version, "accuracy", "false_alarm_rate", minute,
                                         rolling["false_alarm_rate"] > t.max_false_alarm_rate, rolling,
                                         t.max_false_alarm_rate)
            if total.faults >= t.min_faults and rolling["recall"] is not None:
                events += self._crossing(version, "accuracy", "recall", minute, rolling["recall"] < t.min_recall,
                                         rolling, t.min_recall)
        return record, events

    def _crossing(self, version: str, kind: str, metric: str, minute: int, bad: bool, figures: dict[str, Any],
                  threshold: float) -> list[dict[str, Any]]:
        """A model-event when ``bad`` changed for (version, metric) and stayed so for ``persist_minutes``
        minutes that had the figure: raised, or cleared after being raised."""
        key = (version, metric)
        if bad == self.raised.get(key, False):
            self.streak[key] = 0
            return []
        self.streak[key] = self.streak.get(key, 0) + 1
        if self.streak[key] < self.thresholds.persist_minutes:
            return []
        self.raised[key], self.streak[key] = bad, 0
        return [{"kind": kind, "metric": metric, "status": "raised" if bad else "cleared", "model_version": version,
                 "minute": iso_minute(minute), "minute_ms": minute, "threshold": threshold, "figures": figures}]
