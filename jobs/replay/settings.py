"""What one replay needs: the file, the topic, the column roles and the pace (validated on construction)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from connectors import schema_store
from connectors.kafka_io import DEFAULT_PARTITIONS

NAMESPACE = "dev.vigil.replay"
CONSTANT_ENTITY_FIELD = "entity_id"
FileFormat = Literal["csv", "parquet"]

_SUFFIX_FORMATS: dict[str, FileFormat] = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
}
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class ReplayError(ValueError):
    """Bad input: the file, its columns or values, or an option. Exit code 2.

    ``written`` is how many records had already been delivered to Kafka when the problem was found
    (0 when it was found before producing anything); ``offsets`` maps partition -> (first, last)
    offset of what was written.
    """

    def __init__(self, message: str, *, written: int = 0,
                 offsets: dict[int, tuple[int, int]] | None = None) -> None:
        super().__init__(message)
        self.written = written
        self.offsets = offsets or {}


def _default_bootstrap() -> str:
    from vigil.settings import VigilSettings

    return VigilSettings.load().bootstrap_servers


def _comma_tuple(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _help(text: str, **more: object) -> dict[str, object]:
    return {"help": text, **more}


@dataclass(frozen=True)
class ReplaySettings:
    """Everything one replay needs; validated on construction (ReplayError names the bad value).

    ``speed``: 0 = as fast as possible, 1.0 = the file's own pace (gaps between consecutive
    timestamps), 10 = ten times faster; no single pause is longer than ``max_sleep_s`` seconds.
    ``chunk_size``: rows read, checked and converted at a time (also the unit in which a bad row
    stops a replay: rows of earlier chunks are written, none of the bad chunk).
    ``columns``: feature columns to keep (file names); None = every numeric column.
    """

    path: Path = field(metadata=_help("CSV or Parquet file to replay", argument=True, metavar="FILE"))
    topic: str = field(metadata=_help("Kafka topic to write (created if missing)"))
    format: FileFormat | None = field(default=None, metadata=_help("file format", show_default="from the suffix"))
    time_column: str | None = field(default=None, metadata=_help("event time column", show_default="detected"))
    entity_column: str | None = field(default=None, metadata=_help(
        "machine/device id column, the Kafka key", show_default="detected"))
    label_column: str | None = field(default=None, metadata=_help(
        "label column", show_default="detected; none if no column looks like one"))
    entity_id: str | None = field(default=None, metadata=_help(
        "entity id for every row when there is no entity column", show_default="the file stem"))
    normal_labels: tuple[str, ...] = field(default=("0", "0.0", "false", "normal", "ok", "none", "no"), metadata=_help(
        "comma-separated label values that mean a normal reading; stored as null", parse=_comma_tuple))
    columns: tuple[str, ...] | None = field(default=None, metadata=_help(
        "comma-separated numeric feature columns to keep", parse=_comma_tuple, show_default="all"))
    sep: str | None = field(default=None, metadata=_help(
        "CSV separator; '\\t' or 'tab' for tabs", show_default="detected"))
    speed: float = field(default=0.0, metadata=_help("0 = as fast as possible, 1 = original pace, 10 = ten times faster"))
    max_sleep_s: float = field(default=10.0, metadata=_help(
        "longest pause between two records when pacing, in seconds", flag="--max-sleep"))
    partitions: int = field(default=DEFAULT_PARTITIONS, metadata=_help("partitions if the topic is created"))
    chunk_size: int = field(default=50_000, metadata=_help("rows read and checked at a time"))
    bootstrap_servers: str = field(default_factory=_default_bootstrap, metadata={"cli": False})
    broker_timeout_s: float = field(default=5.0, metadata=_help(
        "seconds to wait for the broker to answer", flag="--broker-timeout"))
    dry_run: bool = field(default=False, metadata=_help(
        "read and check the whole file and print its schema; write nothing"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not _TOPIC_RE.match(self.topic or ""):
            raise ReplayError(f"invalid topic name {self.topic!r}: use 1-249 letters, digits, '.', '_', '-'")
        if self.topic == schema_store.SCHEMA_TOPIC or self.topic.startswith("__"):
            raise ReplayError(f"topic {self.topic!r} is reserved; pick another --topic")
        if self.format is not None:
            fmt = str(self.format).lower()
            if fmt not in ("csv", "parquet"):
                raise ReplayError(f"format must be 'csv' or 'parquet', got {self.format!r}")
            object.__setattr__(self, "format", fmt)
        if self.sep is not None:
            sep = {"\\t": "\t", "tab": "\t"}.get(self.sep, self.sep)
            if len(sep) != 1 or sep in "\r\n\"":
                raise ReplayError(f"separator must be one character, got {self.sep!r}")
            object.__setattr__(self, "sep", sep)
        if self.columns is not None:
            cols = tuple(c.strip() for c in self.columns if c.strip())
            if not cols:
                raise ReplayError(f"--columns names no column: {self.columns!r}")
            object.__setattr__(self, "columns", cols)
        if self.entity_id is not None and not self.entity_id.strip():
            raise ReplayError(f"entity id must not be blank, got {self.entity_id!r}")
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise ReplayError(f"speed must be a finite number >= 0, got {self.speed!r}")
        if not (math.isfinite(self.max_sleep_s) and self.max_sleep_s > 0):
            raise ReplayError(f"max sleep must be > 0 seconds, got {self.max_sleep_s!r}")
        if self.partitions < 1:
            raise ReplayError(f"partitions must be >= 1, got {self.partitions!r}")
        if self.chunk_size < 1:
            raise ReplayError(f"chunk size must be >= 1, got {self.chunk_size!r}")
        if not self.broker_timeout_s > 0:
            raise ReplayError(f"broker timeout must be > 0 seconds, got {self.broker_timeout_s!r}")

    @property
    def resolved_format(self) -> FileFormat:
        """The given format, else the one the file's suffix names."""
        if self.format is not None:
            return self.format
        fmt = _SUFFIX_FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ReplayError(
                f"cannot tell the format of {self.path} from its suffix {self.path.suffix!r}; "
                f"pass --format csv or --format parquet"
            )
        return fmt

    @property
    def constant_entity(self) -> str:
        """The entity id every row gets when the file has no entity column."""
        return self.entity_id or self.path.stem
