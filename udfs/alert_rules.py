"""Alert hysteresis as a pure function ``(state, reading, count, quiet) -> (state, events)``, tested without Flink.

An entity **enters** an alarm when ``enter`` of its last ``within`` readings are anomalous and
**leaves** it after ``clear`` consecutive normal readings. Each alarm is one episode with one id:
an ``open`` event when it starts and a ``closed`` event when it ends, each carrying the
episode so far (first and last anomalous reading, peak score, anomalous readings, up to
``MAX_READINGS`` of them). Consumers page on ``open`` and resolve on ``closed``; a topic
compacted by ``episode_id`` keeps one record per episode.

The jobs keep the state per entity (keyed state) and compute the two window facts the rule
needs from the entity's recent anomaly flags: ``count`` (anomalous readings among the last
``within``, this one included) and ``quiet`` (none among the last ``clear``). The DataStream job
feeds every scored reading; the Table job computes the facts with LAG over an OVER window (Java)
and feeds only the readings at which the state can change (:meth:`Hysteresis.relevant`): an
anomalous one, or one where an anomalous reading leaves either window. Fed either way, the rule
gives the same events. Events have the fields of the alert contract (connectors/records.py)
except the entity pseudonym, the time and label columns' names, which the job adds.

``Hysteresis(1, 1, 1)`` makes every run of consecutive anomalous readings an episode.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

MAX_READINGS = 16  # readings kept in an alert (the first ones of the episode)


@dataclass(frozen=True)
class Reading:
    """One scored reading of an entity, as the rule sees it."""

    event_time: dt.datetime | None  # naive UTC
    score: float
    source_partition: int
    source_offset: int
    label: str | None = None
    model_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"event_time": self.event_time, "score": self.score, "source_partition": self.source_partition,
                "source_offset": self.source_offset, "label": self.label}


@dataclass(frozen=True)
class Episode:
    """The state of an entity: its recent anomalous readings while calm, its episode while alarmed."""

    recent: tuple[Reading, ...] = ()   # calm: the last ``enter`` anomalous readings
    open: bool = False
    episode_id: str | None = None
    first: Reading | None = None
    last: Reading | None = None
    peak: float = 0.0
    anomalies: int = 0
    readings: tuple[Reading, ...] = ()


CALM = Episode()


@dataclass(frozen=True)
class Hysteresis:
    """Enter after ``enter`` anomalous of the last ``within`` readings (none of them already part of an
    episode that closed); leave after ``clear`` normal ones in a row."""

    enter: int = 1
    within: int = 1
    clear: int = 1

    def __post_init__(self) -> None:
        for name in ("enter", "within", "clear"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"alarm {name} must be a whole number >= 1, got {value!r}")
        if self.enter > self.within:
            raise ValueError(f"an alarm needs {self.enter} anomalous readings among the last {self.within}: "
                             f"--alarm-enter must be <= --alarm-within")

    @property
    def lags(self) -> int:
        """How many earlier flags the window facts need."""
        return max(self.within, self.clear)

    def describe(self) -> str:
        return (f"an alarm opens at {self.enter} anomalous of {self.within} readings and closes after "
                f"{self.clear} normal one(s)")

    def facts(self, flags: list[bool]) -> tuple[int, bool]:
        """(count, quiet) from the entity's flags, newest first (this reading's first)."""
        return sum(flags[:self.within]), not any(flags[:self.clear])

    def relevant(self, flags: list[bool]) -> bool:
        """Whether the state can change at this reading (flags newest first, up to ``lags`` + 1)."""
        return bool(flags[0] or (len(flags) > self.clear and flags[self.clear])
                    or (len(flags) > self.within and flags[self.within]))

    def step(self, state: Episode, reading: Reading, anomalous: bool, count: int,
             quiet: bool, entity: str) -> tuple[Episode, list[dict[str, Any]]]:
        """The new state and the events (0 or 1) this reading causes."""
        if not state.open:
            if not anomalous:
                return state, []
            recent = (state.recent + (reading,))[-self.enter:]
            # ``enter`` anomalies within the window, none of them part of an episode that closed
            behind = recent[-min(count, len(recent)):]
            if count < self.enter or len(behind) < self.enter:
                return dataclasses.replace(state, recent=recent), []
            opened = Episode(open=True, episode_id=f"{entity}:{behind[0].source_partition}:{behind[0].source_offset}",
                             first=behind[0], last=reading, peak=max(r.score for r in behind),
                             anomalies=len(behind), readings=behind[:MAX_READINGS])
            return opened, [self._event(opened, "open", reading, None)]
        if anomalous:
            return dataclasses.replace(
                state, last=reading, peak=max(state.peak, reading.score), anomalies=state.anomalies + 1,
                readings=state.readings + (reading,) if len(state.readings) < MAX_READINGS else state.readings), []
        if quiet and count < self.enter:
            return CALM, [self._event(state, "closed", reading, reading.event_time)]
        return state, []

    @staticmethod
    def _event(episode: Episode, status: str, at: Reading, ended: dt.datetime | None) -> dict[str, Any]:
        return {
            "episode_id": episode.episode_id, "status": status,
            "event_time": at.event_time, "score": at.score, "label": at.label,
            "source_partition": at.source_partition, "source_offset": at.source_offset,
            "model_version": at.model_version,
            "anomalies": episode.anomalies, "first_event_time": episode.first.event_time,
            "last_event_time": episode.last.event_time, "ended_at": ended, "max_score": episode.peak,
            "readings": [r.as_dict() for r in episode.readings],
        }


def replay(rule: Hysteresis, flags: list[bool], readings: list[Reading], entity: str = "e",
           only_relevant: bool = False) -> list[dict[str, Any]]:
    """Run the rule over one entity's readings in order (for tests and the quality benchmark)."""
    state, events, history = CALM, [], []
    for flag, reading in zip(flags, readings):
        history.insert(0, bool(flag))
        del history[rule.lags + 1:]
        if only_relevant and not rule.relevant(history):
            continue
        count, quiet = rule.facts(history)
        state, out = rule.step(state, reading, bool(flag), count, quiet, entity)
        events += out
    return events
