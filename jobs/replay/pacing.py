"""Pacing a replay at a multiple of the file's own rhythm."""
from __future__ import annotations

import time
from collections.abc import Callable

# --- producing ---------------------------------------------------------------------------------

class Pacer:
    """Paces records at ``speed`` times the file's own rhythm (0 = no pacing).

    Waits are scheduled against one start instant, so they do not drift; time only moves forward
    (a timestamp earlier than one already seen adds no wait) and no gap adds more than
    ``max_sleep_s`` seconds.
    """

    def __init__(self, speed: float, max_sleep_s: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.speed = speed
        self.max_sleep_s = max_sleep_s
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._high_ms: int | None = None
        self._due_s = 0.0

    def wait(self, event_ms: int) -> None:
        """Block until the record with event time ``event_ms`` is due."""
        if self.speed <= 0:
            return
        if self._start is None or self._high_ms is None:
            self._start, self._high_ms = self._clock(), event_ms
            return
        gap_s = max(0, event_ms - self._high_ms) / 1000.0 / self.speed
        self._high_ms = max(self._high_ms, event_ms)
        self._due_s += min(gap_s, self.max_sleep_s)
        delay = self._start + self._due_s - self._clock()
        if delay > 0:
            self._sleep(delay)


