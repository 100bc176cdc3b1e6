"""Row validation with the telemetry-v1 suite: the compiled engine flags exactly the rows GX flags."""
from __future__ import annotations

import json
import pickle

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from connectors.avro_serde import feature_columns, load_schema, plausible_times
from jobs.simulation import FAILURE_MODES, PHYSICAL_RANGES
from udfs.validate_features import (
    SUITES_DIR,
    TELEMETRY_COLUMNS,
    SuiteValidator,
    ValidateFeatures,
    build_telemetry_suite,
    load_suite,
    validate_udf,
)

BETWEEN = "expect_column_values_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
GOOD_FIRMWARE = ["3.1.4", "3.2.0", "3.2.1", "10.0.12"]
BAD_FIRMWARE = ["", "3.2", "v3.2.1", " 3.2.1", "3.2.1-rc1", "3..1", "3.2.1 ", "a.b.c",
                "3.2.1\n",  # passes: Python's $ matches before a final newline
                "\u0663.2.1"]  # passes: \d matches any Unicode digit (ARABIC-INDIC THREE)
GOOD_LABELS = [*FAILURE_MODES, None]
BAD_LABELS = ["", "normal", "Tire_leak", "tire_leak ", "unknown"]


@pytest.fixture(scope="module")
def suite() -> dict:
    return load_suite("telemetry-v1")


@pytest.fixture(scope="module")
def engines(suite) -> dict[str, SuiteValidator]:
    return {"compiled": SuiteValidator(suite), "gx": SuiteValidator(suite, engine="gx")}


def varied_frame(seed: int, rows: int = 1500) -> pd.DataFrame:
    """Mostly valid readings with values out of range, exactly on the bounds, one ulp past them,
    NaN, None, ±inf, bad firmware strings and bad labels; a shuffled, non-contiguous index."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for column, (low, high) in PHYSICAL_RANGES.items():
        span = high - low
        x = rng.uniform(low, high, rows)
        special = np.array([low, high, np.nextafter(low, -np.inf), np.nextafter(high, np.inf),
                            low - span, high + span, np.nan, np.inf, -np.inf])
        hit = rng.random(rows) < 0.08
        x[hit] = rng.choice(special, hit.sum())
        data[column] = x
    firmware = np.array(GOOD_FIRMWARE + BAD_FIRMWARE + [None, np.nan], dtype=object)
    weights = np.r_[np.full(len(GOOD_FIRMWARE), 8.0), np.ones(len(firmware) - len(GOOD_FIRMWARE))]
    data["firmware_version"] = rng.choice(firmware, rows, p=weights / weights.sum())
    labels = np.array(GOOD_LABELS + BAD_LABELS + [np.nan], dtype=object)
    weights = np.r_[np.ones(len(FAILURE_MODES)), 20.0, np.ones(len(BAD_LABELS) + 1)]
    data["failure_label"] = rng.choice(labels, rows, p=weights / weights.sum())
    # event times: plausible ones, the bounds exactly, a millisecond past them, far past (year 3000), NaT
    base = np.datetime64("2026-01-01T00:00:00", "ms") + rng.integers(0, 10**9, rows).astype("timedelta64[ms]")
    special_times = np.array(["2000-01-01T00:00:00", "2100-01-01T00:00:00", "1999-12-31T23:59:59.999",
                              "2100-01-01T00:00:00.001", "3000-01-01T00:00:00", "NaT"], dtype="datetime64[ms]")
    hit = rng.random(rows) < 0.08
    base[hit] = rng.choice(special_times, hit.sum())
    data["event_time"] = base
    frame = pd.DataFrame(data, index=rng.permutation(rows) * 3 + 100)
    frame.loc[frame.index[:5], "speed_kmh"] = None  # None in a float column: stored as NaN
    return frame


def test_suite_file_is_what_the_builder_writes(suite):
    built = build_telemetry_suite()

    def strip(s: dict) -> dict:  # GX stamps its own version into meta: an upgrade alone must not fail this
        return {**s, "meta": {k: v for k, v in s["meta"].items() if k != "great_expectations_version"}}

    assert strip(suite) == strip(built)
    assert json.loads(json.dumps(built)) == built  # plain JSON round-trip


def test_suite_file_is_a_valid_gx_suite_that_round_trips(suite):
    import great_expectations as gx

    parsed = gx.ExpectationSuite(**suite)
    assert parsed.name == "telemetry-v1"
    assert parsed.to_json_dict()["expectations"] == suite["expectations"]


def test_suite_ranges_equal_the_simulators_physical_ranges(suite):
    ranges = {e["kwargs"]["column"]: (e["kwargs"]["min_value"], e["kwargs"]["max_value"])
              for e in suite["expectations"] if e["type"] == BETWEEN}
    assert ranges.pop("event_time") == plausible_times(load_schema())["event_time"]
    assert ranges == PHYSICAL_RANGES
    assert list(ranges) == feature_columns(load_schema())  # every feature of the Avro schema, in order
    not_null = [e["kwargs"]["column"] for e in suite["expectations"] if e["type"] == NOT_NULL]
    assert not_null == [*PHYSICAL_RANGES, "firmware_version"]
    in_set = [e["kwargs"] for e in suite["expectations"] if e["type"] == "expect_column_values_to_be_in_set"]
    assert in_set == [{"column": "failure_label", "value_set": list(FAILURE_MODES)}]
    assert TELEMETRY_COLUMNS == ["event_time", *PHYSICAL_RANGES, "firmware_version", "failure_label"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_compiled_flags_exactly_the_rows_gx_flags(engines, seed):
    frame = varied_frame(seed)
    gx_out = engines["gx"].failures(frame)
    compiled_out = engines["compiled"].failures(frame)
    assert gx_out.index.equals(frame.index) and compiled_out.index.equals(frame.index)
    assert gx_out.notna().sum() > len(frame) // 4  # the data really is varied
    pd.testing.assert_series_equal(compiled_out, gx_out)


def test_same_rows_with_other_dtypes(engines):
    """float32, int64, object-with-None and all-null columns, and duplicate index labels."""
    frame = varied_frame(7, rows=600)
    frame["throttle_pct"] = frame["throttle_pct"].astype(np.float32)
    frame["engine_rpm"] = np.random.default_rng(7).integers(-100, 9000, len(frame))
    frame["coolant_temp_c"] = frame["coolant_temp_c"].astype(object).where(frame["coolant_temp_c"].notna(), None)
    frame["accel_z_g"] = np.nan
    frame["failure_label"] = None
    frame.index = np.repeat(np.arange(len(frame) // 2), 2)
    pd.testing.assert_series_equal(engines["compiled"].failures(frame), engines["gx"].failures(frame))


def test_custom_suite_strict_and_one_sided_bounds_sets_and_unanchored_regex():
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="custom", expectations=[
        gxe.ExpectColumnValuesToBeBetween(column="a", min_value=0, max_value=1, strict_min=True),
        gxe.ExpectColumnValuesToBeBetween(column="a", min_value=0, max_value=1, strict_max=True),
        gxe.ExpectColumnValuesToBeBetween(column="a", min_value=0, max_value=1, strict_min=True, strict_max=True),
        gxe.ExpectColumnValuesToBeBetween(column="b", min_value=-1),
        gxe.ExpectColumnValuesToBeBetween(column="b", max_value=1, strict_max=True),
        gxe.ExpectColumnValuesToBeInSet(column="c", value_set=[1, 2, "x"]),
        gxe.ExpectColumnValuesToMatchRegex(column="d", regex=r"\d{2}"),
        gxe.ExpectColumnValuesToNotBeNull(column="c"),
    ]).to_json_dict()
    rng = np.random.default_rng(3)
    n = 800
    frame = pd.DataFrame({
        "a": rng.choice([0.0, 1.0, 0.5, -0.1, 1.1, np.nan, np.inf, -np.inf], n),
        "b": rng.choice([-1.0, -2.0, 1.0, 0.99, np.nan, np.inf, -np.inf], n),
        "c": rng.choice(np.array([1, 2, 3, 1.0, "x", "y", None, np.nan, True], dtype=object), n),
        "d": rng.choice(np.array(["a12", "1", "x99y", 12, 3.5, None, "", "7\n8"], dtype=object), n),
    })
    compiled, via_gx = SuiteValidator(suite), SuiteValidator(suite, engine="gx")
    assert compiled.columns == ["a", "b", "c", "d"]
    out = compiled.failures(frame)
    pd.testing.assert_series_equal(out, via_gx.failures(frame))
    assert out.notna().any() and out.isna().any()


def test_nan_and_inf_semantics(engines):
    """NaN/None are null (not_be_null fails, between does not); ±inf is not null but out of range."""
    frame = varied_frame(0, rows=6).head(6)
    frame.loc[:, list(PHYSICAL_RANGES)] = [[np.mean(r) for r in PHYSICAL_RANGES.values()]] * 6
    frame["firmware_version"], frame["failure_label"] = "3.2.1", None
    frame.iloc[1, 0], frame.iloc[2, 0], frame.iloc[3, 0], frame.iloc[4, 0] = np.nan, np.inf, -np.inf, None
    frame.iloc[5, frame.columns.get_loc("failure_label")] = np.nan
    for engine in engines.values():
        assert engine.failures(frame).tolist() == [
            None, f"{NOT_NULL}(speed_kmh)", f"{BETWEEN}(speed_kmh)", f"{BETWEEN}(speed_kmh)", f"{NOT_NULL}(speed_kmh)",
            None]


def test_several_failures_are_joined_in_suite_order(engines):
    frame = varied_frame(0, rows=1).head(1)
    frame.loc[:, list(PHYSICAL_RANGES)] = [[np.mean(r) for r in PHYSICAL_RANGES.values()]]
    frame["firmware_version"], frame["failure_label"] = None, "oil_leak"
    frame["coolant_temp_c"], frame["speed_kmh"] = 200.0, np.nan
    expected = (f"{NOT_NULL}(speed_kmh); {BETWEEN}(coolant_temp_c); {NOT_NULL}(firmware_version); "
                "expect_column_values_to_be_in_set(failure_label)")
    for engine in engines.values():
        assert engine.failures(frame).tolist() == [expected]


def test_strings_in_a_numeric_column_fail_the_batch_in_both_engines(engines):
    frame = varied_frame(1, rows=10)
    frame["speed_kmh"] = frame["speed_kmh"].astype(object)
    frame.iloc[0, 0] = "fast"
    for engine in engines.values():
        with pytest.raises(TypeError, match="speed_kmh"):
            engine.failures(frame)


def test_missing_column_is_named(engines):
    for engine in engines.values():
        with pytest.raises(ValueError, match="accel_y_g"):
            engine.failures(varied_frame(1, rows=5).drop(columns="accel_y_g"))


@pytest.mark.parametrize("engine", ["compiled", "gx"])
def test_unsupported_expectations_are_refused_by_name(engine):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    def suite_of(expectation) -> dict:
        return gx.ExpectationSuite(name="s", expectations=[expectation]).to_json_dict()

    with pytest.raises(ValueError, match="unsupported expectation type 'expect_column_mean_to_be_between'"):
        SuiteValidator(suite_of(gxe.ExpectColumnMeanToBeBetween(column="a", min_value=0, max_value=1)), engine)
    with pytest.raises(ValueError, match="unsupported expectation type 'expect_column_values_to_be_unique'"):
        SuiteValidator(suite_of(gxe.ExpectColumnValuesToBeUnique(column="a")), engine)
    with pytest.raises(ValueError, match=r"mostly=0\.9 is not supported"):
        SuiteValidator(suite_of(gxe.ExpectColumnValuesToNotBeNull(column="a", mostly=0.9)), engine)
    with pytest.raises(ValueError, match="row_condition"):
        SuiteValidator(suite_of(gxe.ExpectColumnValuesToNotBeNull(column="a", row_condition='b>0',
                                                                  condition_parser="pandas")), engine)
    with pytest.raises(ValueError, match="engine must be one of"):
        SuiteValidator(suite_of(gxe.ExpectColumnValuesToNotBeNull(column="a")), "spark")


def test_load_suite_by_name_and_path(suite, tmp_path):
    assert load_suite(SUITES_DIR / "telemetry-v1.json") == suite
    with pytest.raises(ValueError, match="no expectation suite named 'nope'"):
        load_suite("nope")
    with pytest.raises(ValueError, match="no expectation suite file"):
        load_suite(tmp_path / "missing.json")


# --- the UDF contract (the same checks as tests/udfs/test_udf_contract.py) ----------------------
@pytest.fixture
def udfs(suite) -> list[ValidateFeatures]:
    return [ValidateFeatures(suite, TELEMETRY_COLUMNS), ValidateFeatures(suite, TELEMETRY_COLUMNS, engine="gx")]


def _columns(frame: pd.DataFrame) -> list[pd.Series]:
    return [frame[c].reset_index(drop=True) for c in TELEMETRY_COLUMNS]


def test_pickles_before_open(udfs):
    for fn in udfs:
        clone = pickle.loads(cloudpickle.dumps(fn))
        assert (clone.suite, clone.columns, clone.engine) == (fn.suite, fn.columns, fn.engine)
        clone.open(None)  # and works on the far side
        assert len(clone.eval(*_columns(varied_frame(2, rows=3)))) == 3


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_length_in_equals_length_out(udfs, rows):
    for fn in udfs:
        fn.open(None)
        out = fn.eval(*_columns(varied_frame(rows, rows=rows)))
        assert len(out) == rows and out.dtype == object
        assert all(v is None or isinstance(v, str) for v in out)


def test_udf_gives_what_the_validator_gives(udfs, engines):
    frame = varied_frame(5, rows=400)
    expected = engines["gx"].failures(frame).tolist()
    for fn in udfs:
        fn.open(None)
        assert fn.eval(*_columns(frame)).tolist() == expected


def test_nan_inf_and_null_give_defined_results_not_crashes(udfs):
    cols = [pd.Series(np.full(6, np.datetime64("2026-01-01T00:00:00", "ms")))]  # event_time
    cols += [pd.Series([np.mean(PHYSICAL_RANGES[c])] * 6) for c in PHYSICAL_RANGES]
    cols[4] = pd.Series([1.0, np.nan, np.inf, -np.inf, None, 2.0], dtype="float64")  # coolant_temp_c
    cols += [pd.Series(["3.2.1", "3.2.1", None, "3.2.1", "3.2.1", "3.2.1"], dtype=object),
             pd.Series([None, np.nan, "tire_leak", "x", None, None], dtype=object)]
    for fn in udfs:
        fn.open(None)
        assert fn.eval(*cols).tolist() == [
            None,
            f"{NOT_NULL}(coolant_temp_c)",
            f"{BETWEEN}(coolant_temp_c); {NOT_NULL}(firmware_version)",
            f"{BETWEEN}(coolant_temp_c); expect_column_values_to_be_in_set(failure_label)",
            f"{NOT_NULL}(coolant_temp_c)",
            None]


def test_empty_batch(udfs):
    for fn in udfs:
        fn.open(None)
        out = fn.eval(pd.Series([], dtype="datetime64[ms]"), *[pd.Series([], dtype="float64") for _ in PHYSICAL_RANGES],
                      pd.Series([], dtype=object), pd.Series([], dtype=object))
        assert len(out) == 0 and out.dtype == object


def test_udf_misuse_is_named(suite):
    with pytest.raises(ValueError, match="firmware_version"):
        ValidateFeatures(suite, list(PHYSICAL_RANGES))
    with pytest.raises(ValueError, match="engine must be one of"):
        ValidateFeatures(suite, TELEMETRY_COLUMNS, engine="fast")
    fn = ValidateFeatures(suite, TELEMETRY_COLUMNS)
    with pytest.raises(RuntimeError, match="before open"):
        fn.eval(pd.Series([1.0]))
    fn.open(None)
    with pytest.raises(ValueError, match="expects 20 columns"):
        fn.eval(pd.Series([1.0]))


# --- inside Flink --------------------------------------------------------------------------------
@pytest.mark.flink
def test_same_strings_in_a_minicluster_job_as_in_python(suite, engines, flink_activated):
    from pyflink.table import DataTypes
    from pyflink.table.expressions import col

    from jobs.core.flink_env import table_environment

    frame = varied_frame(11, rows=500).reset_index(drop=True)
    numeric = list(PHYSICAL_RANGES)
    # event times in year 3000 too: they must reach the Python worker without overflowing pandas' ns
    times = [None if pd.isna(t) else t.to_pydatetime() for t in frame["event_time"].astype(object)]
    rows = [(i, times[i], *[float(v) for v in r[1:len(numeric) + 1]],
             *[None if pd.isna(v) else v for v in r[len(numeric) + 1:]])
            for i, r in enumerate(frame[TELEMETRY_COLUMNS].itertuples(index=False))]
    row_type = DataTypes.ROW([DataTypes.FIELD("id", DataTypes.BIGINT()), DataTypes.FIELD("event_time", DataTypes.TIMESTAMP(3))]
                             + [DataTypes.FIELD(c, DataTypes.DOUBLE()) for c in numeric]
                             + [DataTypes.FIELD(c, DataTypes.STRING()) for c in ("firmware_version", "failure_label")])
    expected = dict(enumerate(engines["compiled"].failures(frame).tolist()))
    assert sum(v is not None for v in expected.values()) > 100

    t_env = table_environment(streaming=False, parallelism__default=1,
                              **{"python__fn-execution__arrow__batch__size": 64})
    readings = t_env.from_elements(rows, row_type)
    cols = [col(c) for c in TELEMETRY_COLUMNS]
    checked = readings.select(col("id"), validate_udf(suite, TELEMETRY_COLUMNS)(*cols).alias("compiled"),
                              validate_udf(suite, TELEMETRY_COLUMNS, engine="gx")(*cols).alias("gx"))
    got = {r[0]: (r[1], r[2]) for r in checked.execute().collect()}
    assert got == {i: (v, v) for i, v in expected.items()}

    t_env.create_temporary_view("readings", readings)
    t_env.execute_sql("CREATE TEMPORARY SYSTEM FUNCTION VALIDATE_TELEMETRY AS "
                      "'udfs.validate_features.validate_telemetry' LANGUAGE PYTHON")
    result = t_env.execute_sql(f"SELECT id, VALIDATE_TELEMETRY({', '.join(TELEMETRY_COLUMNS)}) FROM readings")
    assert {r[0]: r[1] for r in result.collect()} == expected
