"""jobs.replay: CSV numbers with thousands separators, decimal commas, and columns that mix formats."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from jobs.replay.numbers import NumberFormat, describe_mixed, number_format
from jobs.replay_file import ReplayError, ReplaySettings, ReplaySource, main, read_rows

NOWHERE = "127.0.0.1:1"


def _settings(path: Path, **kw: object) -> ReplaySettings:
    return ReplaySettings(path=path, topic="replay.numbers", bootstrap_servers=NOWHERE, **kw)


def test_one_format_per_column_or_none() -> None:
    assert number_format(pd.Series(["1,234.5", "999.5", "12,345,678"])) == NumberFormat(",", ".")
    assert number_format(pd.Series(["1.234,5", "12,5", None])) == NumberFormat(".", ",")
    assert number_format(pd.Series(["1 234,5", "5"])) == NumberFormat(" ", ",")
    assert number_format(pd.Series(["1\u00a0234,5"])) == NumberFormat(" ", ",")  # a no-break space
    assert number_format(pd.Series(["1 234"]), file_decimal=",") == NumberFormat(" ", ",")
    assert number_format(pd.Series(["12,5", "3,0"])) is None  # decimal commas: the file-wide detection's job
    assert number_format(pd.Series(["1,234.5", "1.234,5"])) is None
    assert number_format(pd.Series(["1,23", "12,345"])) is None  # "1,23" is no thousands group
    values, bad = NumberFormat(".", ",").parse(pd.Series(["-1.234.567,25", "", None, "1,234.5"]))
    assert values.tolist()[0] == -1234567.25 and values.isna().tolist()[1:] == [True, True, True]
    assert bad.tolist() == [False, False, False, True]
    assert describe_mixed(pd.Series(["1,234.5", "1.234,5", "7"])) == \
        "text: numbers in mixed formats, e.g. '1,234.5' and '1.234,5'"
    assert describe_mixed(pd.Series(["1,234.5", "ok"])) is None  # text, not numbers
    assert describe_mixed(pd.Series(["12,5", "3,0"])) is None  # one format reads them all


@pytest.mark.parametrize("name, text, expected_sep", [
    ("dot decimals", 'time,car,odometer_km,speed\n2024-01-01T00:00:00,c1,"1,234.5",50.5\n'
                     '2024-01-01T00:00:01,c1,"12,345,678.25",51\n2024-01-01T00:00:02,c1,999,52\n', ","),
    ("comma decimals", "time;car;odometer_km;speed\n2024-01-01T00:00:00;c1;1.234,5;50,5\n"
                       "2024-01-01T00:00:01;c1;12.345.678,25;51\n2024-01-01T00:00:02;c1;999;52\n", ";"),
    ("space groups", "time;car;odometer_km;speed\n2024-01-01T00:00:00;c1;1 234,5;50,5\n"
                     "2024-01-01T00:00:01;c1;12 345 678,25;51\n2024-01-01T00:00:02;c1;999;52\n", ";"),
])
def test_thousands_separators_read_as_numbers(tmp_path: Path, name: str, text: str, expected_sep: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "odo.csv"
    path.write_text(text)
    source = ReplaySource.open(_settings(path))
    assert source.sep == expected_sep, name
    assert source.plan.features == ("odometer_km", "speed")
    rows = list(source.records())
    assert [r["odometer_km"] for r in rows] == [1234.5, 12345678.25, 999.0], name
    assert [r["speed"] for r in rows] == [50.5, 51.0, 52.0], name  # the decimal-comma detection still applies

    assert main([str(path), "--topic", "odo", "--dry-run", "--bootstrap-servers", NOWHERE]) == 0
    out = capsys.readouterr().out
    assert "features: odometer_km, speed (numeric)" in out and "dropped:" not in out


def test_decimal_commas_without_groups_still_read(tmp_path: Path) -> None:
    path = tmp_path / "de.csv"
    path.write_text("Zeitstempel;pump_id;druck\n2024-01-01T00:00:00;p1;12,5\n2024-01-01T00:00:01;p1;-0,25\n")
    source = ReplaySource.open(_settings(path, time_column="Zeitstempel"))
    assert (source.sep, source.decimal, source.number_formats) == (";", ",", {})
    assert [r["druck"] for r in source.records()] == [12.5, -0.25]


def test_every_chunk_is_read_with_the_first_chunks_format(tmp_path: Path) -> None:
    """A later chunk whose values are all below 1,000 ("1.234" alone) is read in the column's format."""
    path = tmp_path / "late.csv"
    path.write_text("time;car;odo\n2024-01-01T00:00:00;c1;1.234,5\n2024-01-01T00:00:01;c1;2.000,0\n"
                    "2024-01-01T00:00:02;c1;1.234\n2024-01-01T00:00:03;c1;7,5\n")
    _, records = read_rows(_settings(path, chunk_size=2))
    assert [r["odo"] for r in records] == [1234.5, 2000.0, 1234.0, 7.5]

    path.write_text('time,car,odo\n2024-01-01T00:00:00,c1,"1,234.5"\n2024-01-01T00:00:01,c1,"2,000"\n'
                    '2024-01-01T00:00:02,c1,"1.234,5"\n')
    _, records = read_rows(_settings(path, chunk_size=2))
    with pytest.raises(ReplayError, match=r"row 3: '1.234,5' in column 'odo' is not a number written like the "
                                          r"rest of the column \(1,234.5\)"):
        list(records)


def test_a_column_mixing_formats_is_dropped_with_the_reason(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text('time,truck_id,odo,speed\n2024-01-01T00:00:00,t1,"1,234.5",50\n'
                    '2024-01-01T00:00:01,t1,"1.234,5",51\n2024-01-01T00:00:02,t1,12,52\n')
    source = ReplaySource.open(_settings(path))
    assert source.plan.features == ("speed",)
    assert ("odo", "text: numbers in mixed formats, e.g. '1,234.5' and '1.234,5'") in source.plan.dropped

    assert main([str(path), "--topic", "mixed", "--dry-run", "--bootstrap-servers", NOWHERE]) == 0
    assert "dropped: odo (text: numbers in mixed formats, e.g. '1,234.5' and '1.234,5')" in capsys.readouterr().out
    with pytest.raises(ReplayError, match=r"--columns names 'odo', which is not numeric \(text: numbers in mixed"):
        ReplaySource.open(_settings(path, columns=("odo",)))
