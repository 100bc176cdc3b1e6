"""Produce the simulated fleet to Kafka, paced like the real thing or as fast as the broker takes it."""
from __future__ import annotations

import itertools
import sys
import time
from collections import Counter
from collections.abc import Sequence

from jobs.simulation.fleet import DEFAULT_MODES, FleetSettings, event_time_ms, generate


def produce(settings: FleetSettings, bootstrap: str, topic: str, rate: float = 0.0, *, skip: int = 0,
            speed: float = 1.0) -> Counter[str | None]:
    """Produce ``generate(settings)`` to ``topic``; returns the count of readings per label.

    With ``rate > 0`` each record is sent when its event time comes (relative to the first sent),
    which paces the stream at ``speed * vehicles / interval_s`` events per second. ``skip`` leaves
    out the first readings, so a later call continues an earlier one's fleet and timeline. Ctrl-C
    stops early: what was sent is still delivered and counted. Raises ConnectorError when a record
    is not delivered.
    """
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    from tqdm import tqdm

    from connectors.avro_serde import load_schema
    from connectors.kafka_io import AvroProducer

    counts: Counter[str | None] = Counter()
    t0, start_ms = time.monotonic(), None
    every = 1 if rate > 0 else 1000
    with AvroProducer(bootstrap, topic, load_schema()) as producer, \
            tqdm(total=settings.events - skip, unit="ev", desc=topic, disable=None, file=sys.stderr) as bar:
        try:
            for n, record in enumerate(itertools.islice(generate(settings), skip, None), start=1):
                ts = event_time_ms(record)
                start_ms = ts if start_ms is None else start_ms
                if rate > 0:
                    ahead = (ts - start_ms) / 1000 / speed - (time.monotonic() - t0)
                    if ahead > 0.002:
                        time.sleep(ahead)
                producer.send(record, key=record["vehicle_id"], timestamp_ms=ts)
                counts[record["failure_label"]] += 1
                if n % every == 0:
                    bar.update(every)
        except KeyboardInterrupt:
            pass  # stop early, but still deliver (and count) what was sent
        bar.update(sum(counts.values()) - bar.n)
    return counts


def summary(counts: Counter[str | None], topic: str, modes: Sequence[str] = DEFAULT_MODES) -> str:
    """One line: events, labelled share and the count of each of ``modes`` (the fleet's failure_modes)."""
    total = sum(counts.values())
    labelled = total - counts.get(None, 0)
    shown = [*modes, *sorted(m for m in counts if m is not None and m not in modes)]
    per_mode = ", ".join(f"{m}={counts.get(m, 0)}" for m in shown)
    share = labelled / total if total else 0.0
    return f"produced {total} events to {topic!r}: {labelled} labelled failures ({share:.2%}): {per_mode}"
