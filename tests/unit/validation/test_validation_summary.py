"""Pure summarising of GX results: severity, keys, counts, failure messages."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.validation.summary import (
    Severity,
    expectation_key,
    failure_message,
    jsonable,
    resolve_severity,
    severity_overrides,
    summarize_result,
)


def _item(type_, success, result=None, meta=None, severity="critical", exception=None, **kwargs):
    return {
        "success": success,
        "expectation_config": {"type": type_, "kwargs": {"batch_id": "b", **kwargs}, "meta": meta or {},
                               "severity": severity},
        "result": result or {},
        "exception_info": exception or {"raised_exception": False, "exception_message": None},
    }


NULLS = _item("expect_column_values_to_not_be_null", False,
              {"element_count": 10, "unexpected_count": 2, "unexpected_percent": 20.0,
               "partial_unexpected_list": [None, None]}, column="x")
RANGE_WARN = _item("expect_column_values_to_be_between", False,
                   {"element_count": 10, "unexpected_count": 1, "unexpected_percent": 10.0,
                    "partial_unexpected_list": [float("inf")]}, meta={"severity": "warning"}, column="y",
                   min_value=0, max_value=1)
COLUMNS_OK = _item("expect_table_columns_to_match_ordered_list", True, {"observed_value": ["x", "y"]},
                   column_list=["x", "y"])
MISSING = _item("expect_column_values_to_be_between", False, {}, column="gone",
                exception={"MetricConfigurationID(...)": {"raised_exception": True,
                                                          "exception_message": 'Error: The column "gone" in '
                                                          "BatchData does not exist.",
                                                          "exception_traceback": "..."}})


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}, "expect_table_row_count_to_be_between"),
        ({"type": "expect_column_values_to_be_unique", "kwargs": {"column": "day"}}, "expect_column_values_to_be_unique(day)"),
        ({"type": "expect_column_pair_values_a_to_be_greater_than_b", "kwargs": {"column_A": "a", "column_B": "b"}},
         "expect_column_pair_values_a_to_be_greater_than_b(a,b)"),
        ({"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["a", "b"]}},
         "expect_compound_columns_to_be_unique(a,b)"),
        ({"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["a"]}}, "expect_table_columns_to_match_set"),
        ({"type": "expect_column_values_to_be_between", "kwargs": {"column": "p"}, "meta": {"name": "p_ok"}}, "p_ok"),
    ],
)
def test_expectation_key(config, key):
    assert expectation_key(config) == key


@pytest.mark.parametrize(
    ("config", "overrides", "expected"),
    [
        ({"type": "t", "kwargs": {"column": "c"}}, {}, Severity.CRITICAL),
        ({"type": "t", "kwargs": {"column": "c"}, "meta": {"severity": "warning"}}, {}, Severity.WARNING),
        ({"type": "t", "kwargs": {"column": "c"}, "severity": "warning"}, {}, Severity.WARNING),
        ({"type": "t", "kwargs": {"column": "c"}, "severity": "info"}, {}, Severity.WARNING),
        ({"type": "t", "kwargs": {"column": "c"}}, {"t(c)": "warning"}, Severity.WARNING),
        ({"type": "t", "kwargs": {"column": "c"}}, {"t": "warn"}, Severity.WARNING),
        ({"type": "t", "kwargs": {"column": "c"}, "meta": {"severity": "warning"}}, {"t(c)": "critical"},
         Severity.CRITICAL),
        ({"type": "t", "kwargs": {"column": "c"}}, {"t(other)": "warning"}, Severity.CRITICAL),
    ],
)
def test_resolve_severity(config, overrides, expected):
    assert resolve_severity(config, overrides) is expected


def test_severity_overrides_merges_warn_only_and_rejects_unknown():
    assert severity_overrides({"a": "critical"}, ["b"]) == {"a": Severity.CRITICAL, "b": Severity.WARNING}
    with pytest.raises(ValueError, match="severity"):
        severity_overrides({"a": "fatal"})


def test_summarize_counts_failures_and_warnings():
    s = summarize_result({"results": [NULLS, RANGE_WARN, COLUMNS_OK, MISSING]})
    assert s["success"] is False
    assert (s["evaluated"], s["failed"], s["warned"]) == (4, 2, 1)
    assert s["unexpected_counts"] == {"expect_column_values_to_not_be_null(x)": 2,
                                      "expect_column_values_to_be_between(y)": 1}
    by_key = {f["expectation"]: f for f in s["failures"]}
    assert by_key["expect_column_values_to_not_be_null(x)"]["examples"] == [None, None]
    assert "does not exist" in by_key["expect_column_values_to_be_between(gone)"]["exception"]
    assert "batch_id" not in by_key["expect_column_values_to_not_be_null(x)"]["kwargs"]
    assert s["warnings"][0]["examples"] == ["inf"]
    json.dumps(s, allow_nan=False)  # XCom-safe: no NaN or inf literals


def test_warning_only_failures_keep_success():
    s = summarize_result({"results": [RANGE_WARN, COLUMNS_OK]})
    assert s["success"] is True and s["failed"] == 0 and s["warned"] == 1


def test_override_turns_a_failure_into_a_warning():
    s = summarize_result({"results": [NULLS]}, {"expect_column_values_to_not_be_null": Severity.WARNING})
    assert s["success"] is True and s["warned"] == 1


def test_duplicate_keys_are_numbered():
    s = summarize_result({"results": [NULLS, NULLS]})
    assert [f["expectation"] for f in s["failures"]] == [
        "expect_column_values_to_not_be_null(x)", "expect_column_values_to_not_be_null(x)#2"]


def test_max_examples_cuts_examples():
    item = _item("expect_column_values_to_be_in_set", False,
                 {"element_count": 9, "unexpected_count": 9, "partial_unexpected_list": list(range(9))}, column="c")
    assert summarize_result({"results": [item]}, max_examples=3)["failures"][0]["examples"] == [0, 1, 2]


def test_jsonable_handles_numpy_and_non_finite():
    np = pytest.importorskip("numpy")
    out = jsonable({"a": np.float64(1.5), "b": np.int64(3), "c": float("nan"), "d": [float("-inf")] * 25})
    assert out["a"] == 1.5 and out["b"] == 3 and out["c"] == "nan"
    assert out["d"][0] == "-inf" and out["d"][-1] == "... 5 more" and len(out["d"]) == 21


def test_failure_message_lists_each_failure_and_the_hint():
    s = summarize_result({"results": [NULLS, RANGE_WARN, MISSING]})
    s.update(data_uri="/data/b.csv", suite="rainfall", digest="sha256:ab")
    msg = failure_message(s, "/q/2024-b.csv")
    assert "Data batch /data/b.csv failed 2 of 3 expectations of suite 'rainfall'" in msg
    assert "expect_column_values_to_not_be_null(x); 2 of 10 values unexpected (20%); examples [None, None]" in msg
    assert 'could not be evaluated: Error: The column "gone"' in msg  # no column list known: GX's own words
    assert "warning-only" in msg and "expect_column_values_to_be_between(y)" in msg
    assert "Expected: every critical expectation to pass" in msg and "copied to /q/2024-b.csv" in msg


def test_every_value_is_capped_in_messages_and_summaries():
    from airflow_mlops.validation.summary import MAX_VALUE_CHARS, describe_failure

    cell = "x" * (1 << 20)  # a 1 MiB cell
    entry = {"expectation": "expect_column_values_to_match_regex(note)", "observed_value": cell,
             "examples": [cell, cell]}
    line = describe_failure(entry)
    assert len(line) <= 1000 and "1,048,576 characters" in line
    assert len(jsonable({"v": cell})["v"]) < MAX_VALUE_CHARS + 40


def test_file_level_problems_are_named_first():
    from airflow_mlops.validation.batches import file_problems

    assert "JSON" in file_problems(b'{"day": 1, "rain": 0}\n', "b.csv")[0]
    assert "semicolons" in file_problems(b"day;rain\n1;0\n", "b.csv")[0]
    assert "repeats column name" in file_problems(b"day,rain,rain\n1,0,0\n", "b.csv")[0]
    assert "cut short" in file_problems(b"day,rain,temp\n1,0,0.5\n2,1", "b.csv")[0]
    assert file_problems(b"day,rain\n1,0\n", "b.csv") == []
    s = summarize_result({"results": [NULLS]})
    s.update(data_uri="/data/b.csv", suite="rainfall", digest="sha256:ab",
             file_problems=["the columns are separated by semicolons, not commas"])
    assert failure_message(s).startswith("The file itself is wrong: the columns are separated by semicolons")


def test_gx_details_name_the_missing_classes_and_extra_columns():
    from airflow_mlops.validation.summary import describe_failure

    classes = {"expectation": "expect_column_distinct_values_to_contain_set(rain)", "observed_value": None,
               "details": None}
    classes["observed_value"] = {"value_counts": [{"value": 0, "count": 60}]}
    assert "only the values [0]" in describe_failure(classes)
    columns = {"expectation": "expect_table_columns_to_match_ordered_list", "type":
               "expect_table_columns_to_match_ordered_list", "observed_value": ["day", "rain", "humidity"],
               "kwargs": {"column_list": ["day", "rain", "temperature"]}}
    said = describe_failure(columns)
    assert "missing column(s) ['temperature']" in said and "unexpected column(s) ['humidity']" in said
