"""The corpus of bad batches: each fails with the right error and message, and nothing is lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlops_bad_inputs import KINDS, make

from airflow_mlops.exceptions import DataValidationError, MlopsConfigurationError
from airflow_mlops.validation import (
    REASON_FILE,
    BatchNotFoundError,
    BatchReadError,
    ExpectationsFailedError,
    FeatureSpec,
    PathOutsideRootError,
    ValidationConfig,
    ValidationService,
    suite_from_feature_spec,
)

E = ExpectationsFailedError
#: kind -> (error type, words the message must hold, is a copy expected in quarantine)
CASES: dict[str, tuple[type[Exception], list[str], bool]] = {
    "empty_file": (BatchReadError, ["empty.csv", "empty (0 bytes)", "Expected:", "Hint:"], True),
    "whitespace_only": (BatchReadError, ["blank.csv", "only whitespace"], True),
    "header_only": (E, ["expect_table_row_count_to_be_between", "observed 0"], True),
    "missing_column": (E, ["expect_table_columns_to_match_ordered_list", "missing column(s) ['visibility']",
                           "column 'visibility' is missing from the batch"], True),
    "extra_column": (E, ["expect_table_columns_to_match_ordered_list", "unexpected column(s) ['humidity']"], True),
    "reordered_columns": (E, ["expect_table_columns_to_match_ordered_list", "another order", "'dew_point', 'temperature'"], True),
    "wrong_dtype": (E, ["expect_column_values_to_be_in_type_list(temperature)", "expect_column_values_to_be_between(temperature)",
                        "read as object because 9 of 60 value(s) are not numbers", "offending values ['warm']",
                        "first at data row(s) 1, 8, 15, 22, 29"], True),
    "late_wrong_type": (E, ["expect_column_values_to_be_in_type_list(dew_point)",
                            "read as object because 2 of 60 value(s) are not numbers",
                            "offending values ['unknown', '12,5']; first at data row(s) 37, 51"], True),
    "float_label": (E, ["expect_column_values_to_be_in_type_list(rain)", "expect_column_values_to_be_in_set(rain)",
                        "read as float64 because 1 of 60 value(s) are not whole numbers; offending values [0.5]",
                        "examples [0.5]"], True),
    "all_null_column": (E, ["expect_column_values_to_not_be_null(dew_point)", "60 of 60 values unexpected (100%)"], True),
    "nan_values": (E, ["expect_column_values_to_not_be_null(temperature)", "2 of 60 values unexpected"], True),
    "inf_values": (E, ["expect_column_values_to_be_between(average_wind_speed)", "'inf'", "'-inf'"], True),
    "sentinel_values": (E, ["expect_column_values_to_be_between(maximum_temperature)", "examples [-999.0, -999.0, -999.0]"], True),
    "unseen_label": (E, ["expect_column_values_to_be_in_set(rain)", "examples [2]"], True),
    "duplicated_rows": (E, ["expect_column_values_to_be_unique(day)", "expect_column_values_to_be_unique(date)", "expect_column_values_to_be_increasing(day)"], True),
    "rows_out_of_order": (E, ["expect_column_values_to_be_increasing(day)"], True),
    "too_few_rows": (E, ["expect_table_row_count_to_be_between", "observed 3"], True),
    "bad_date_format": (E, ["expect_column_values_to_match_regex(date)", "expect_column_values_to_match_strftime_format(date)"], True),
    "truncated_parquet": (BatchReadError, ["truncated.parquet", "truncated", "PAR1", "rewrite the file"], True),
    "damaged_parquet": (BatchReadError, ["damaged.parquet", "Parquet file is damaged"], True),
    "latin1_csv": (BatchReadError, ["latin1.csv", "not valid UTF-8", "latin-1", "byte b'", "at offset"], True),
    "ragged_csv": (BatchReadError, ["ragged.csv", "cannot be parsed", "Expected 11 fields"], True),
    "png_as_csv": (BatchReadError, ["picture.csv", "not a table", "PNG image"], True),
    "random_bytes_as_parquet": (BatchReadError, ["noise.parquet", "not a Parquet file", "PAR1"], True),
    "gzip_as_csv": (BatchReadError, ["compressed.csv", "gzip archive"], True),
    "missing_file": (BatchNotFoundError, ["never_written.csv", "does not exist", "Hint:"], False),
    "directory_not_file": (BatchNotFoundError, ["a_folder.csv", "is a folder, not a file"], False),
    "path_traversal": (PathOutsideRootError, ["outside the allowed root", "..", "outside.csv"], False),
    "symlink_out_of_root": (PathOutsideRootError, ["outside the allowed root", "link.csv", "elsewhere.csv"], False),
}
FIXED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_every_generated_kind_has_a_case():
    assert set(CASES) == set(KINDS)
    assert len(CASES) >= 15


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_input(kind, window, tmp_path, suite_path):
    error_type, words, quarantined = CASES[kind]
    data_root, q_root = tmp_path / "batches", tmp_path / "quarantine"
    path = make(kind, window, data_root)
    before = path.read_bytes() if path.is_file() else None
    config = ValidationConfig(str(path), suite_path, quarantine_root=str(q_root), allowed_root=str(data_root))

    with pytest.raises((DataValidationError, MlopsConfigurationError)) as err:
        ValidationService(clock=lambda: FIXED).validate(config).raise_for_failure()

    assert type(err.value) is error_type, str(err.value)
    message = str(err.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    if before is not None:
        assert path.read_bytes() == before  # the original is never changed
    if not quarantined:
        assert not q_root.exists()
        return
    (folder,) = list(q_root.iterdir())
    assert folder.name.startswith("20240102T030405000000Z-")
    copy = folder / path.name
    assert copy.read_bytes() == before
    reason = json.loads((folder / REASON_FILE).read_text())
    assert reason["data_uri"] == str(path.resolve()) and reason["digest"].startswith("sha256:")
    assert str(folder) in message
    assert err.value.summary["quarantine_uri"] == str(folder)
    if error_type is BatchReadError:
        assert reason["reason"] and reason["success"] is False
    else:
        assert reason["failures"] and reason["failed"] == len(reason["failures"])


@pytest.fixture
def station_suite(tmp_path) -> str:
    """A small suite with a categorical column, built from a feature spec."""
    spec = FeatureSpec.from_dict({
        "name": "stations",
        "columns": [
            {"name": "station", "dtype": "object", "categories": ["north", "south"]},
            {"name": "reading", "dtype": "float64", "min": 0, "max": 100},
        ],
        "row_count": {"min": 1, "max": 100},
    })
    path = tmp_path / "stations.json"
    path.write_text(json.dumps(suite_from_feature_spec(spec)))
    return str(path)


def test_unseen_category(station_suite, tmp_path):
    import pandas as pd

    path = tmp_path / "stations.csv"
    pd.DataFrame({"station": ["north", "south", "east", "north"], "reading": [1.0, 2.0, 3.0, 4.0]}).to_csv(
        path, index=False)
    with pytest.raises(ExpectationsFailedError, match=r"expect_column_values_to_be_in_set\(station\); "
                       r"1 of 4 values unexpected \(25%\); examples \['east'\]"):
        ValidationService().validate(ValidationConfig(str(path), station_suite,
                                                      quarantine_root=str(tmp_path / "q"), allowed_root=str(tmp_path))).raise_for_failure()
    assert (tmp_path / "q").exists()


def test_known_categories_pass(station_suite, tmp_path):
    import pandas as pd

    path = tmp_path / "stations.parquet"
    pd.DataFrame({"station": ["north", "south"], "reading": [1.0, 2.0]}).to_parquet(path, index=False)
    assert ValidationService().validate(ValidationConfig(str(path), station_suite, allowed_root=str(tmp_path))).success


def test_read_error_without_quarantine_root_says_nothing_was_copied(window, tmp_path, suite_path):
    path = make("empty_file", window, tmp_path)
    with pytest.raises(BatchReadError) as err:
        ValidationService().validate(ValidationConfig(str(path), suite_path, allowed_root=str(tmp_path)))
    assert "copied to" not in str(err.value) and err.value.summary["quarantine_uri"] is None
    assert Path(path).exists()
