"""Small tables with known defects, and a suite that exercises every streaming plan, for engine tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def e(type_: str, **kwargs) -> dict:
    return {"type": type_, "kwargs": kwargs, "meta": {}}


def mixed_frame(n: int = 101, seed: int = 0) -> pd.DataFrame:
    """Nulls, out-of-range values, unknown categories, duplicates and a decrease that crosses chunk borders."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "id": np.r_[np.arange(n - 6), [3, 7, 7, 50, n - 7, n - 6]],
        "x": np.where(rng.random(n) < 0.1, np.nan, rng.normal(0, 1, n)),
        "k": rng.integers(0, 5, n),
        "s": np.array(["a", "b", "c", "zz"], dtype=object)[rng.integers(0, 4, n)],
        "t": np.r_[np.arange(50), [49], np.arange(51, n)].astype(float),
    })
    df.loc[5, "s"] = None
    return df


MIXED_SUITE = {"name": "mixed", "expectations": [
    e("expect_table_columns_to_match_ordered_list", column_list=["id", "x", "k", "s", "t"]),
    e("expect_table_row_count_to_be_between", min_value=1, max_value=100),
    e("expect_column_values_to_not_be_null", column="x"),
    e("expect_column_values_to_not_be_null", column="s", mostly=0.9),
    e("expect_column_values_to_be_between", column="x", min_value=-1.5, max_value=1.5),
    e("expect_column_values_to_be_in_set", column="s", value_set=["a", "b", "c"]),
    e("expect_column_values_to_be_in_type_list", column="x", type_list=["float64"]),
    e("expect_column_values_to_be_in_type_list", column="s", type_list=["str"]),
    e("expect_column_values_to_be_unique", column="id"),
    e("expect_column_unique_value_count_to_be_between", column="k", min_value=1, max_value=4),
    e("expect_column_proportion_of_unique_values_to_be_between", column="id", min_value=0.99),
    e("expect_column_values_to_be_increasing", column="t", strictly=True),
    e("expect_column_values_to_be_decreasing", column="t"),
    e("expect_column_mean_to_be_between", column="x", min_value=0.0, max_value=1),
    e("expect_column_stdev_to_be_between", column="x", min_value=0.0, max_value=0.9),
    e("expect_column_min_to_be_between", column="k", min_value=1),
    e("expect_column_max_to_be_between", column="x", max_value=5),
    e("expect_column_sum_to_be_between", column="k", max_value=100),
    e("expect_column_median_to_be_between", column="x", min_value=0.1),
    e("expect_column_quantile_values_to_be_between", column="x", quantile_ranges={
        "quantiles": [0.05, 0.5, 0.95], "value_ranges": [[-2, -1], [-0.5, 0.5], [1, 2]]}),
    e("expect_column_quantile_values_to_be_between", column="k", allow_relative_error="linear",
      quantile_ranges={"quantiles": [0.25, 0.75], "value_ranges": [[0, 1], [3, 4]]}),
    e("expect_column_values_to_match_regex", column="s", regex="^[a-c]$"),
    e("expect_column_mean_to_be_between", column="missing", min_value=0),
]}
