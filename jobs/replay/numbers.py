"""Numbers written with thousands separators in CSV text: ``1,234.5``, ``1.234,5``, ``1 234,5``.

A CSV reader parses one decimal mark per file and no thousands separators, so such a column
arrives as text. :func:`number_format` looks at one column's text and says which single format
every value is written in; the column is then read as text in every chunk and parsed with that
format (:meth:`NumberFormat.parse`), so that a later chunk whose values all happen to be below
1,000 cannot be read another way. A column whose values are numbers in different formats
(``1,234.5`` beside ``1.234,5``) has no format: it stays text, and :func:`describe_mixed` says why.

A column must use its thousands separator at least once to get a format here: columns of plain
numbers are the CSV reader's business, and so are decimal commas without grouping (``12,5``:
the file-wide decimal-comma detection in jobs/replay/source.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

_SPACES = " \u00a0\u202f"  # space, no-break space, narrow no-break space (French and SI grouping)


@dataclass(frozen=True)
class NumberFormat:
    """A thousands separator (',', '.' or a space) and a decimal mark ('.' or ',')."""

    thousands: str
    decimal: str

    @property
    def example(self) -> str:
        """How 1234.5 is written in this format."""
        return f"1{self.thousands}234{self.decimal}5"

    @property
    def pattern(self) -> re.Pattern[str]:
        t = f"[{_SPACES}]" if self.thousands == " " else re.escape(self.thousands)
        d = re.escape(self.decimal)
        # grouped (1,234,567) or ungrouped (999, 1234) integer part, optional decimals
        return re.compile(rf"^[+-]?(?:\d{{1,3}}(?:{t}\d{{3}})+|\d+)(?:{d}\d+)?$")

    def uses_grouping(self, text: str) -> bool:
        seps = _SPACES if self.thousands == " " else self.thousands
        return any(sep in text for sep in seps)

    def parse(self, s: pd.Series) -> tuple[pd.Series, pd.Series]:
        """(floats with NaN for gaps, mask of values that are not numbers in this format)."""
        text = s.astype("string").str.strip()
        present = text.notna() & (text != "")
        fits = text.str.match(self.pattern).fillna(False).astype(bool)
        bad = present & ~fits
        plain = text.where(fits & present)
        for sep in (_SPACES if self.thousands == " " else self.thousands):
            plain = plain.str.replace(sep, "", regex=False)
        if self.decimal == ",":
            plain = plain.str.replace(",", ".", regex=False)
        return pd.to_numeric(plain, errors="coerce").astype("float64"), bad


# The file's decimal mark decides between formats that read the same values equally well.
FORMATS = (NumberFormat(",", "."), NumberFormat(" ", "."), NumberFormat(".", ","), NumberFormat(" ", ","))


def _values(s: pd.Series) -> list[str]:
    text = s.dropna().astype(str).str.strip()
    return [v for v in text.unique().tolist() if v]


def number_format(s: pd.Series, file_decimal: str = ".") -> NumberFormat | None:
    """The one format every value of ``s`` is written in, using thousands separators; else None."""
    values = _values(s)
    if not values:
        return None
    fitting = [f for f in FORMATS
               if all(f.pattern.match(v) for v in values) and any(f.uses_grouping(v) for v in values)]
    if not fitting:
        return None
    # e.g. "1 234" fits "1 234.5" and "1 234,5" alike (the same number): take the file's decimal mark
    return next((f for f in fitting if f.decimal == file_decimal), fitting[0])


def describe_mixed(s: pd.Series) -> str | None:
    """Why a text column is not read as numbers when every value is a number in some format, but
    no one format reads them all (``1,234.5`` beside ``1.234,5``); None for any other column."""
    values = pd.Series(_values(s), dtype="string")
    if values.empty:
        return None
    fits = {f: values.str.match(f.pattern).fillna(False).astype(bool) for f in FORMATS}
    if not pd.concat(list(fits.values()), axis=1).any(axis=1).all():
        return None  # some value is no number at all: plain text
    if any(m.all() for m in fits.values()):
        return None  # one format reads them all (e.g. decimal commas, "12,5": not a thousands column)
    best = max(FORMATS, key=lambda f: int(fits[f].sum()))
    other = values[~fits[best]].iloc[0]
    other_formats = [f for f in FORMATS if f.pattern.match(other)]
    apart = fits[best] & ~pd.concat([fits[f] for f in other_formats], axis=1).any(axis=1)
    one = values[apart].iloc[0] if apart.any() else values[fits[best]].iloc[0]
    return f"text: numbers in mixed formats, e.g. {one!r} and {other!r}"
