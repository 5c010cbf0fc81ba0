"""A failed type expectation names the values that do not fit, and where they are, in memory and in chunks."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops.validation.offenders import (
    expected_kind,
    find_offenders,
    refine_type_failures,
    type_failures,
)
from airflow_mlops.validation.summary import describe_failure


@pytest.mark.parametrize(("types", "kind"), [
    (["int64"], "integer"), (["Int64", "int32"], "integer"), (["uint8"], "integer"), (["LongType"], "integer"),
    (["float64"], "float"), (["int64", "float64"], "float"), (["DoubleType"], "float"),
    (["bool"], "bool"), (["datetime64[ns]"], "datetime"), (["TimestampType"], "datetime"),
    (["object", "str"], None), (["int64", "object"], None),
])
def test_the_expected_kind_is_the_broadest_the_type_list_admits(types, kind):
    assert expected_kind(types) == kind


def test_numbers_read_as_text_name_the_values_that_are_not_numbers():
    column = pd.Series(["1.5", "2", "warm", None, "3e2", "12,5", "warm"], dtype=object)
    found = find_offenders([pd.DataFrame({"t": column})], {"t": "float"}, limit=5)["t"]
    assert (found.count, found.missing, found.rows) == (3, 1, 7)
    assert found.examples == ["warm", "12,5"]  # distinct, first seen first
    assert found.at_rows == [3, 6, 7]  # 1-based data rows
    assert found.said() == "read as object because 3 of 7 value(s) are not numbers"


def test_whole_numbers_expected_name_fractions_and_missing_values():
    fractions = find_offenders([pd.DataFrame({"k": [1.0, 0.5, 2.0, 3.25]})], {"k": "integer"}, 5)["k"]
    assert (fractions.count, fractions.examples, fractions.at_rows) == (2, [0.5, 3.25], [2, 4])
    missing = find_offenders([pd.DataFrame({"k": [1.0, None, 2.0]})], {"k": "integer"}, 5)["k"]
    assert (missing.count, missing.examples) == (0, [])
    assert missing.said() == "read as float64 because 1 of 3 value(s) are missing"


def test_bool_and_datetime_kinds():
    flags = find_offenders([pd.DataFrame({"b": ["true", "False", "yes", "1"]})], {"b": "bool"}, 5)["b"]
    assert (flags.count, flags.examples) == (1, ["yes"])
    dates = find_offenders([pd.DataFrame({"d": ["2024-01-02", "not a date", "2024-02-30"]})], {"d": "datetime"}, 5)
    assert dates["d"].examples == ["not a date", "2024-02-30"]


def test_chunks_give_what_the_whole_column_gives():
    values = ["1"] * 40 + ["x"] + ["2"] * 20 + ["y", "x", "z"] + ["3"] * 10
    df = pd.DataFrame({"c": pd.Series(values, dtype=object)})
    whole = find_offenders([df], {"c": "float"}, 2)["c"]
    chunked = find_offenders((df.iloc[k:k + 7] for k in range(0, len(df), 7)), {"c": "float"}, 2)["c"]
    assert (whole.count, whole.examples, whole.at_rows) == (chunked.count, chunked.examples, chunked.at_rows)
    assert (whole.count, whole.examples, whole.at_rows) == (4, ["x", "y"], [41, 62])


def test_a_summary_entry_gets_the_offending_values_instead_of_the_first_ones():
    entry = {"expectation": "expect_column_values_to_be_in_type_list(t)", "type":
             "expect_column_values_to_be_in_type_list", "column": "t", "unexpected_count": 4, "element_count": 4,
             "unexpected_percent": 100.0, "examples": ["1.5", "2", "3", "warm"],
             "kwargs": {"column": "t", "type_list": ["float64"]}}
    core = {"failures": [entry], "warnings": []}
    assert type_failures(core) == {"t": "float"}
    frame = pd.DataFrame({"t": pd.Series(["1.5", "2", "3", "warm"], dtype=object)})
    refined = refine_type_failures(core, find_offenders([frame], {"t": "float"}, 5))
    line = describe_failure(refined["failures"][0])
    assert "read as object because 1 of 4 value(s) are not numbers" in line
    assert "offending values ['warm']; first at data row(s) 4" in line
    assert "'1.5'" not in line
    assert core["failures"][0]["examples"] == ["1.5", "2", "3", "warm"]  # the input summary is untouched


def test_a_text_type_list_is_left_to_gx():
    entry = {"type": "expect_column_values_to_be_in_type_list", "kwargs": {"column": "s", "type_list": ["str"]}}
    assert type_failures({"failures": [entry], "warnings": []}) == {}
