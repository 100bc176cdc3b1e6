"""Replay a user's CSV or Parquet sensor file into a Kafka topic, so Vigil can watch their machines.

    vigil replay readings.csv --topic plant-a
    vigil replay readings.parquet --topic plant-a --speed 10 --columns temp,vibration

The file's columns are given roles, by option or by name and content:

* **time** (required): ``--time-column``, else the first column whose name looks like a time
  (time, timestamp, date, datetime, ts, epoch) and holds datetimes or text that parses as such; a
  numeric column so named counts as epoch seconds, millis, micros or nanos (told apart by magnitude).
  Naive times are taken as UTC. It becomes a ``long`` / ``timestamp-millis`` field and the Kafka
  record timestamp.
* **entity** (optional): ``--entity-column``, else the column whose name reads most like a machine
  id. Names are compared by their words, case-insensitively (``hostID`` = ``host_id``), in three ranks;
  the best rank wins, then the first in file order: (1) ``id``, ``vin``, or a machine noun with an id
  suffix (``vehicle_id``, ``truck_id``, ``machineID``, ``unit_number``, ``sensor_id``; suffixes id, no, nr,
  num, number, name, key); (2) a machine noun alone: machine, device, vehicle, unit, asset, equipment,
  engine, car, truck, pump, line, host, node; (3) any other ``<x>_id`` / ``<x>ID`` (``customer_id``). So
  ``vehicle_id`` or ``id`` beats ``customer_id``, and ``machine_id`` beats ``line``. Other columns whose
  names look like ids are not features (``--columns`` keeps them). The entity becomes a string field and
  the Kafka key, so each entity's rows keep their file order within one partition. Without one, every
  row gets the constant ``--entity-id`` (default: the file stem) in a field named ``entity_id``.
* **label** (optional): ``--label-column``, else a column named like label, anomaly, failure, fault,
  target, class (``is_anomaly``, ``failure_type``, ``machine_failure``...). Kept as text, except that
  values meaning "normal" (``--normal-labels``, default 0, false, normal, ok, none, no; case-insensitive)
  become null: Vigil's convention is that a null label is a normal reading, anything else a failure.
* **features**: every other numeric (or boolean) column, in file order, as nullable doubles (gaps and
  NaN become null); ``--columns`` limits them. Other columns are dropped, each with the reason.
  CSV numbers may use thousands separators when a whole column is written one way: ``1,234.5``
  (with ``.`` decimals), ``1.234,5`` or ``1 234,5`` (with ``,`` decimals); a file with ``,`` decimals
  (``12,5``) and another separator is read as such. A column mixing formats (``1,234.5`` beside
  ``1.234,5``) stays text and is dropped, with that reason.

Before writing (and with ``--dry-run``) the command prints one line per role with the column chosen
and why (``entity: car (its name)``, ``time: ts (its name; epoch milliseconds by magnitude)``,
``label: none (no column looks like one)``), the features, and every dropped column with why.

Column names are sanitised to Avro names (letters, digits, underscore; not starting with a digit);
two columns that end up with the same name are an error. The schema (namespace ``dev.vigil.replay``,
named after the topic, with the record attributes ``vigil.entity``, ``vigil.time``, ``vigil.label``
and ``vigil.source``) is stored with connectors/schema_store.py before any record is written, which
is how training and scoring find the feature columns.

Rows go out in file order (never sorted). The file's structure and first chunk are checked before
anything is written; a bad row found later stops the replay after flushing, and the error says how
many records were already written and at which offsets.

Exit codes: 0 done, 2 bad input (file, columns, values, options), 1 broker or delivery problems,
130 interrupted. Expected errors print ``error: ...`` on stderr, never a traceback.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence

from connectors.errors import BrokerUnavailable, ConnectorError
from jobs.replay.pacing import Pacer
from jobs.replay.produce import ReplayResult, replay
from jobs.replay.roles import avro_name, derive_schema, plan_columns
from jobs.replay.settings import CONSTANT_ENTITY_FIELD, ReplayError, ReplaySettings
from jobs.replay.source import ReplaySource, read_rows
from vigil.commands import command
from vigil.settings import VigilSettings

__all__ = ["CONSTANT_ENTITY_FIELD", "Pacer", "ReplayError", "ReplayResult", "ReplaySettings", "ReplaySource",
           "avro_name", "derive_schema", "main", "plan_columns", "read_rows", "replay"]


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run(vigil: VigilSettings, settings: ReplaySettings) -> int:
    """Replay (or dry-run) the file; exit codes as in the module docstring."""
    settings = dataclasses.replace(settings, bootstrap_servers=vigil.bootstrap_servers)
    try:
        source = ReplaySource.open(settings)
        print(f"columns of {settings.path.name}:")
        for line in source.role_lines():
            print(f"  {line}")
        if settings.dry_run:
            rows = sum(len(chunk) for chunk in source.chunks())
            print(json.dumps(source.schema, indent=2))
            print(f"checked {rows} rows of {settings.path.name}; features: {', '.join(source.feature_fields)}; "
                  f"nothing written (dry run)")
            return 0
        result = replay(settings, source=source)
    except ReplayError as exc:
        _error(str(exc) if exc.written else f"{exc} (nothing was written to Kafka)")
        return 2
    except BrokerUnavailable as exc:
        _error(f"{exc} (nothing was written)")
        return 1
    except ConnectorError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt as exc:
        _error(str(exc) or "interrupted")
        return 130
    print(f"wrote {result.rows} rows to topic {result.topic!r}; feature columns: "
          f"{', '.join(result.feature_columns)}; schema id: {result.schema_id}")
    return 0


COMMAND = command("replay-file", __doc__, run, options=ReplaySettings, settings_flags=("kafka.bootstrap_servers",),
                  prog="python -m jobs.replay_file")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 ok, 2 bad input, 1 broker, 130 interrupted)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
