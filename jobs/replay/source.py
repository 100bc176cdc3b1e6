"""Reading a CSV or Parquet file in chunks: format and separator detection, first-chunk checks."""
from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.avro_serde import feature_columns
from jobs.replay.convert import Converter
from jobs.replay.numbers import NumberFormat, describe_mixed, number_format
from jobs.replay.roles import (
    ColumnPlan,
    kind_of_series,
    looks_like_label,
    pick_entity,
    plan_columns,
)
from jobs.replay.settings import FileFormat, ReplayError, ReplaySettings

_SNIFF_DELIMITERS = ",;\t|"
_DECIMAL_COMMA_RE = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$|^[+-]?\d+$")


# --- reading files -----------------------------------------------------------------------------

def sniff_separator(path: Path) -> str:
    """The CSV separator csv.Sniffer finds in the first KB of ``path`` (',' when it cannot tell)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        sample = fh.read(1024)
    if len(sample) == 1024 and "\n" in sample:
        sample = sample[: sample.rfind("\n") + 1]  # only whole lines: a cut one skews the counts
    try:
        return csv.Sniffer().sniff(sample, delimiters=_SNIFF_DELIMITERS).delimiter
    except csv.Error:
        return ","


class ReplaySource:
    """An opened, checked file: its format, column plan, schema and (lazily) its records in file order.

    ``open()`` reads the header and the first chunk, plans the columns and converts that chunk, so
    structural problems and bad values near the top raise ReplayError before anything is written.
    ``records()`` re-reads the file from the start; a bad row in a later chunk raises ReplayError
    when that chunk is reached (no record of it is yielded).
    """

    def __init__(self, settings: ReplaySettings) -> None:
        self.settings = settings
        self.format: FileFormat = settings.resolved_format
        self.sep: str | None = None
        self.decimal = "."
        self.total_rows: int | None = None
        self._dtype: dict[str, Any] | None = None
        self.number_formats: dict[str, NumberFormat] = {}  # CSV text columns of numbers with thousands separators
        self.plan: ColumnPlan
        self._converter: Converter

    @classmethod
    def open(cls, settings: ReplaySettings) -> ReplaySource:
        path = settings.path
        if not path.exists():
            raise ReplayError(f"no such file: {path}")
        if not path.is_file():
            raise ReplayError(f"not a file: {path}")
        if path.stat().st_size == 0:
            raise ReplayError(f"{path} is empty (0 bytes)")
        self = cls(settings)
        first = self._open_csv() if self.format == "csv" else self._open_parquet()
        self._converter = Converter(self.plan, first, settings)
        self._converter.convert(first, 1)
        return self

    @property
    def schema(self) -> dict[str, Any]:
        return self.plan.schema

    @property
    def feature_fields(self) -> list[str]:
        return feature_columns(self.schema)

    def role_lines(self) -> list[str]:
        """What each column is used as, and why: one line per role, then one per dropped column."""
        lines = self.plan.role_lines(self._converter.time_detail)
        for c, fmt in self.number_formats.items():
            if c in self.plan.features:
                lines.append(f"numbers: {c} written like {fmt.example} (thousands separator "
                             f"{'space' if fmt.thousands == ' ' else repr(fmt.thousands)}, decimal mark {fmt.decimal!r})")
        return lines

    # CSV -----------------------------------------------------------------------------------
    def _open_csv(self) -> pd.DataFrame:
        settings = self.settings
        self.sep = settings.sep or sniff_separator(settings.path)
        try:
            header = pd.read_csv(settings.path, sep=self.sep, nrows=0, encoding="utf-8-sig")
        except pd.errors.EmptyDataError as exc:
            raise ReplayError(f"{settings.path} is empty (no header, no rows)") from exc
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise ReplayError(f"cannot read {settings.path} as CSV: {exc}") from exc
        names = [str(c) for c in header.columns]
        # Ids and labels stay text ("007" keeps its zeros); the roles depend on names only.
        text_cols = {settings.entity_column, settings.label_column} - {None}
        if settings.entity_column is None:
            text_cols.add(pick_entity(names, {settings.time_column, settings.label_column})[0])
        if settings.label_column is None:
            text_cols |= {next((c for c in names if looks_like_label(c) and c != settings.time_column
                                and c not in text_cols), None)}
        self._dtype = {c: str for c in text_cols if c in names}
        first = self._first_csv_chunk()
        if self.sep != "," and self._has_decimal_commas(first):
            self.decimal = ","
            first = self._first_csv_chunk()
        notes = self._detect_number_formats(first)
        if self.number_formats:  # read them as text in every chunk, parsed with their format
            self._dtype.update(dict.fromkeys(self.number_formats, str))
            first = self._first_csv_chunk()
        self.plan = plan_columns(first, settings, text_notes=notes)
        return first

    def _detect_number_formats(self, df: pd.DataFrame) -> dict[str, str]:
        """Find the text columns of numbers with thousands separators (self.number_formats), and
        return why other text columns of numbers are not read as numbers (mixed formats)."""
        notes: dict[str, str] = {}
        for c in df.columns:
            if c in (self._dtype or {}) or kind_of_series(df[c]) != "string":
                continue
            fmt = number_format(df[c], self.decimal)
            if fmt is not None:
                self.number_formats[str(c)] = fmt
            elif (why := describe_mixed(df[c])) is not None:
                notes[str(c)] = why
        return notes

    def _first_csv_chunk(self) -> pd.DataFrame:
        first = next(self._csv_chunks(), None)
        if first is None or first.empty:
            raise ReplayError(f"{self.settings.path} has a header but no data rows")
        return first

    def _has_decimal_commas(self, df: pd.DataFrame) -> bool:
        for c in df.columns:
            if c in (self._dtype or {}) or kind_of_series(df[c]) != "string":
                continue
            text = df[c].dropna().astype(str)
            if len(text) and text.str.contains(",").any() and text.str.match(_DECIMAL_COMMA_RE).all():
                return True
        return False

    def _csv_chunks(self) -> Iterator[pd.DataFrame]:
        path = self.settings.path
        try:
            reader = pd.read_csv(path, sep=self.sep, decimal=self.decimal, chunksize=self.settings.chunk_size,
                                 encoding="utf-8-sig", dtype=self._dtype, skipinitialspace=True,
                                 float_precision="round_trip")
            with reader:
                row = 1
                for df in reader:
                    yield self._parse_numbers(df, row)
                    row += len(df)
        except pd.errors.EmptyDataError as exc:
            raise ReplayError(f"{path} is empty (no header, no rows)") from exc
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ReplayError(f"cannot read {path} as CSV (separator {self.sep!r}): {str(exc).strip()}") from exc

    def _parse_numbers(self, df: pd.DataFrame, first_row: int) -> pd.DataFrame:
        """``df`` with its thousands-separated columns as floats; ReplayError at a value of another format."""
        if not self.number_formats:
            return df
        df = df.copy()
        for c, fmt in self.number_formats.items():
            values, bad = fmt.parse(df[c])
            if bad.any():
                i = int(bad.to_numpy().argmax())
                raise ReplayError(f"row {first_row + i}: {df[c].iloc[i]!r} in column {c!r} is not a number "
                                  f"written like the rest of the column ({fmt.example})")
            df[c] = values
        return df

    # Parquet -------------------------------------------------------------------------------
    def _parquet_file(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.settings.path)
        except (pa.ArrowException, OSError) as exc:
            raise ReplayError(f"cannot read {self.settings.path} as Parquet: {exc}") from exc

    def _open_parquet(self) -> pd.DataFrame:
        pf = self._parquet_file()
        self.total_rows = pf.metadata.num_rows
        if self.total_rows == 0:
            raise ReplayError(f"{self.settings.path} has no rows")
        first = next(self._parquet_chunks(pf, columns=None))
        self.plan = plan_columns(first, self.settings)
        return first

    def _parquet_chunks(self, pf: pq.ParquetFile, columns: list[str] | None) -> Iterator[pd.DataFrame]:
        try:
            for batch in pf.iter_batches(batch_size=self.settings.chunk_size, columns=columns):
                yield batch.to_pandas(date_as_object=False)
        except (pa.ArrowException, OSError) as exc:
            raise ReplayError(f"cannot read {self.settings.path} as Parquet: {exc}") from exc

    # both ----------------------------------------------------------------------------------
    def chunks(self) -> Iterator[list[dict[str, Any]]]:
        """Converted chunks in file order; raises ReplayError at the first bad chunk."""
        if self.format == "csv":
            frames = self._csv_chunks()
        else:
            plan = self.plan
            used = [c for c in (plan.entity_column, plan.time_column, *plan.features, plan.label_column) if c]
            frames = self._parquet_chunks(self._parquet_file(), columns=used)
        row = 1
        for df in frames:
            yield self._converter.convert(df, row)
            row += len(df)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every row as an Avro-ready dict, in file order."""
        for chunk in self.chunks():
            yield from chunk


def read_rows(settings: ReplaySettings) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """(schema, records in file order) of the file ``settings`` names.

    Problems found in the header or first chunk raise ReplayError here; later ones when the
    iterator reaches them. Records hold the time as epoch millis and None for gaps.
    """
    source = ReplaySource.open(settings)
    return source.schema, source.records()
