"""Build the bundled digits data set (8x8 handwritten digits, 10 classes) from the scikit-learn package.

The source is the optical recognition of handwritten digits set that ships inside the ``scikit-learn`` wheel
(``sklearn.datasets.load_digits``): 1,797 images of 8x8 pixels with values 0..16 and the digit drawn. Nothing is
downloaded. Rows keep the package's order (the order the forms were collected in); ``batch`` numbers 18
consecutive batches of about 100 rows so that windows can be chosen by batch, and ``row_id`` is a stable key.

    python include/datasets/build_digits.py --out data/digits/digits.parquet
"""

from __future__ import annotations

import os
from pathlib import Path

from table_file import run, write_parquet

N_PIXELS = 64
FEATURES = [f"px_{i}" for i in range(N_PIXELS)]
TARGET = "digit"
BATCHES = 18
N_CLASSES = 10


def build(out: str | os.PathLike[str]) -> Path:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data, target = np.asarray(bunch.data, dtype="float64"), np.asarray(bunch.target, dtype="int64")
    if data.shape[1] != N_PIXELS:
        raise RuntimeError(f"load_digits gave {data.shape[1]} pixels per image, expected {N_PIXELS}.")
    n = len(data)
    df = pd.DataFrame(data, columns=FEATURES)
    df.insert(0, "row_id", np.arange(n, dtype="int64"))
    df.insert(1, "batch", (np.arange(n, dtype="int64") * BATCHES // n + 1).astype("int64"))
    df[TARGET] = target
    return write_parquet(df, out)


if __name__ == "__main__":
    raise SystemExit(run(build, __doc__, "data/digits/digits.parquet"))
