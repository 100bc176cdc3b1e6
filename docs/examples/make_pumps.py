"""Write docs/examples/pumps.csv: the sample readings of docs/own-data.md.

    .venv/bin/python docs/examples/make_pumps.py

Three pumps, one reading a minute for a day. Flow follows each pump's load, pressure follows flow,
vibration is steady around 1 mm/s, except for pump-2's failing bearing from 18:00 to 18:39: its
vibration jumps to about 6.5 mm/s and those 40 readings are labelled ``bearing`` in ``fault``.
``site`` is a text column, there to show that replay drops what is not a sensor reading.
The numbers come from a fixed seed, so the file is the same on every run (the walkthrough's test
checks that the committed file is this script's output).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import sys
from pathlib import Path

import numpy as np

PUMPS = 3
MINUTES = 24 * 60
START = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
FAILING_PUMP, FAILURE_FROM, FAILURE_MINUTES = 2, 18 * 60, 40
COLUMNS = ["ts", "pump_id", "site", "flow_lpm", "pressure_bar", "vibration_mm_s", "fault"]
CSV_PATH = Path(__file__).with_name("pumps.csv")


def readings(seed: int = 3) -> list[dict]:
    """Every row of the file, pump by pump, in time order within a pump."""
    rng = np.random.default_rng(seed)
    rows = []
    for pump in range(PUMPS):
        load = rng.uniform(0.5, 0.9)
        for minute in range(MINUTES):
            flow = 100 * load + rng.normal(0, 2)
            failing = pump == FAILING_PUMP and FAILURE_FROM <= minute < FAILURE_FROM + FAILURE_MINUTES
            rows.append({
                "ts": (START + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "pump_id": f"pump-{pump}",
                "site": "riverside",
                "flow_lpm": f"{flow:.3f}",
                "pressure_bar": f"{2 + 0.03 * flow + rng.normal(0, 0.05):.3f}",
                "vibration_mm_s": f"{(6.5 if failing else 1.0) + rng.normal(0, 0.1):.3f}",
                "fault": "bearing" if failing else "none",
            })
    return rows


def render() -> str:
    """The CSV text (``\\n`` line ends on every platform)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(readings())
    return out.getvalue()


def main() -> int:
    CSV_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {CSV_PATH} ({PUMPS * MINUTES} readings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
