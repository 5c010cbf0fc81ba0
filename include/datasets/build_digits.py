"""Build the bundled digits data set (8x8 handwritten digits, 10 classes) from the scikit-learn package.

The source is the optical recognition of handwritten digits set that ships inside the ``scikit-learn`` wheel
(``sklearn.datasets.load_digits``): 1,797 images of 8x8 pixels with values 0..16 and the digit drawn. Nothing is
downloaded. Rows keep the package's order (the order the forms were collected in); ``batch`` numbers 18
consecutive batches of about 100 rows so that windows can be chosen by batch, and ``row_id`` is a stable key.

    python include/datasets/build_digits.py --out data/digits/digits.parquet
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out_path)
    return out_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/digits/digits.parquet")
    args = parser.parse_args()
    path = build(args.out)
    print(path)


if __name__ == "__main__":
    main()
