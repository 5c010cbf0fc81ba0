"""Build the bundled diabetes data set (disease progression after one year, regression) from scikit-learn.

The source is the diabetes study that ships inside the ``scikit-learn`` wheel (``sklearn.datasets.load_diabetes``
with ``scaled=False``): 442 patients, ten baseline measurements in their original units (age, sex, body mass
index, blood pressure, six blood serum measurements s1..s6) and ``progression``, a quantitative measure of
disease progression one year later (25..346). Nothing is downloaded. Rows keep the package's order (the order
patients were enrolled in); ``batch`` numbers 11 consecutive batches of about 40 rows so that windows can be
chosen by batch, and ``row_id`` is a stable key.

    python include/datasets/build_diabetes.py --out data/diabetes/diabetes.parquet
"""

from __future__ import annotations

import os
from pathlib import Path

from table_file import run, write_parquet

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
TARGET = "progression"
BATCHES = 11


def build(out: str | os.PathLike[str]) -> Path:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_diabetes

    try:
        bunch = load_diabetes(scaled=False)
    except TypeError:  # scikit-learn before 1.1 has no scaled=: the features come mean-centred and scaled
        bunch = load_diabetes()
    names = list(bunch.feature_names)
    if names != FEATURES:
        raise RuntimeError(f"load_diabetes gave features {names}, expected {FEATURES}.")
    n = len(bunch.data)
    df = pd.DataFrame(np.asarray(bunch.data, dtype="float64"), columns=FEATURES)
    df.insert(0, "row_id", np.arange(n, dtype="int64"))
    df.insert(1, "batch", (np.arange(n, dtype="int64") * BATCHES // n + 1).astype("int64"))
    df[TARGET] = np.asarray(bunch.target, dtype="float64")
    return write_parquet(df, out)


if __name__ == "__main__":
    raise SystemExit(run(build, __doc__, "data/diabetes/diabetes.parquet"))
