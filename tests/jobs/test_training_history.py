"""`vigil train --history`: the object tier's readings add to the Kafka range, never repeat it."""
from __future__ import annotations

import pandas as pd

from connectors.kafka_io import PartitionRange
from jobs.training.trainer import OFFSET, PARTITION, history_beside


def _history() -> pd.DataFrame:
    return pd.DataFrame({PARTITION: [0, 0, 0, 0, 1, 1], OFFSET: [5, 6, 6, 10, 5, 9],
                         "t": pd.to_datetime(["2026-01-01T00:00", "2026-01-01T00:01", "2026-01-01T00:01",
                                              "2026-01-01T00:05", "2026-01-01T00:00", "2026-01-02T00:00"], utc=True),
                         "x": [1.0, 2.0, 2.0, 3.0, 4.0, 5.0]})


def test_readings_the_kafka_range_holds_or_the_tier_holds_twice_are_left_out():
    ranges = [PartitionRange(0, 8, 20), PartitionRange(1, 0, 6)]  # offsets 8..19 of p0, 0..5 of p1 are read
    kept = history_beside(_history(), ranges, "t", None, None)
    assert list(zip(kept[PARTITION], kept[OFFSET])) == [(0, 5), (0, 6), (1, 9)]


def test_the_training_time_range_applies_to_the_history_too():
    kept = history_beside(_history(), [], "t", "2026-01-01T00:01:00Z", "2026-01-02T00:00:00Z")
    assert list(zip(kept[PARTITION], kept[OFFSET])) == [(0, 6), (0, 10)]


def test_readings_without_a_source_position_are_all_kept():
    """Parquet written elsewhere has no source partition/offset: nothing to match, nothing dropped."""
    history = _history().assign(**{PARTITION: float("nan"), OFFSET: float("nan")})
    assert len(history_beside(history, [PartitionRange(0, 0, 100)], "t", None, None)) == 6
    assert len(history_beside(_history().drop(columns=[PARTITION, OFFSET]), [], "t", None, None)) == 6
