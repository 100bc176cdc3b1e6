"""Alert rules as pure functions ``(state, reading) -> (state, alert | None)``, tested without Flink.

A job keeps one state per entity (keyed state in the DataStream job) and feeds each of the
entity's anomalous readings, in event-time order, through :meth:`KInWindow.step`; the rule
itself holds no state. The alert it returns has the fields of the alert contract
(connectors/records.py) except the entity pseudonym and the label column's name, which the job
adds.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reading:
    """One anomalous reading of an entity, as the alert rule sees it."""

    event_time: dt.datetime  # naive UTC
    score: float
    source_partition: int
    source_offset: int
    label: str | None = None

    @property
    def millis(self) -> int:
        return int((self.event_time - _EPOCH).total_seconds() * 1000)

    def as_dict(self) -> dict[str, Any]:
        return {"event_time": self.event_time, "score": self.score, "source_partition": self.source_partition,
                "source_offset": self.source_offset, "label": self.label}


_EPOCH = dt.datetime(1970, 1, 1)
State = tuple[Reading, ...]


@dataclass(frozen=True)
class KInWindow:
    """Alert when an entity has ``count`` anomalous readings within ``window_seconds`` of event time.

    One alert per burst: the state empties when an alert fires, so the next alert needs
    ``count`` new anomalies. Readings older than the window (relative to the newest) are dropped.
    """

    count: int = 3
    window_seconds: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"alert count must be an integer >= 1, got {self.count!r}")
        if not (isinstance(self.window_seconds, (int, float)) and math.isfinite(self.window_seconds)
                and self.window_seconds > 0):
            raise ValueError(f"alert window must be > 0 seconds, got {self.window_seconds!r}")

    def step(self, state: State, reading: Reading) -> tuple[State, dict[str, Any] | None]:
        """The new state and, when the rule fires, the alert (see the module docstring)."""
        now, window_ms = reading.millis, self.window_seconds * 1000
        recent = tuple(r for r in state if now - r.millis <= window_ms) + (reading,)
        if len(recent) < self.count:
            return recent, None
        alert = {
            "event_time": reading.event_time, "score": reading.score,
            "source_partition": reading.source_partition, "source_offset": reading.source_offset,
            "label": reading.label, "anomalies": len(recent), "window_seconds": float(self.window_seconds),
            "first_event_time": recent[0].event_time, "last_event_time": recent[-1].event_time,
            "max_score": max(r.score for r in recent), "readings": [r.as_dict() for r in recent],
        }
        return (), alert
