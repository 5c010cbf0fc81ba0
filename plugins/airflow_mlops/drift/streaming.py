"""Reference and current profiles built in one streaming pass, from mergeable per-column sketches."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.drift.base import DriftConfig, column_kind
from airflow_mlops.drift.profile import MAX_COUNTED_VALUES, ColumnProfile, ReferenceProfile, _key

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: KLL sketch size per numerical column: normalised rank error about 0.07%, a few tens of KiB per column.
KLL_K = 4096
#: Distinct values counted per column of a current window (its counts feed chi-square, Z and JS tests).
CURRENT_COUNT_LIMIT = 10_000


@dataclass
class ColumnSketch:
    """
    One column's mergeable summary: count, mean and centred second moment (Chan et al.), value counts while
    they stay few, the first values verbatim while there are few, and a KLL quantile sketch.
    """

    kind: str
    integer: bool
    points: int
    count_limit: int = MAX_COUNTED_VALUES
    rows: int = 0
    mean: float = 0.0
    m2: float = 0.0
    counts: dict[str, int] | None = field(default_factory=dict)
    n_unique_floor: int = 0
    buffer: list[np.ndarray] | None = field(default_factory=list)
    buffered: int = 0
    sketch: Any = None

    def add(self, series: pd.Series) -> None:
        v = series.dropna()
        k = len(v)
        if not k:
            return
        if self.counts is not None:
            vc = v.value_counts()
            if self.kind == "numerical" and len(vc) > self.count_limit:
                # Too many values to count: only a floor of the distinct count is kept (it decides nothing).
                self.n_unique_floor = max(self.n_unique_floor, len(vc), len(self.counts))
                self.counts = None
            else:
                for value, count in vc.items():
                    key = _key(value)
                    self.counts[key] = self.counts.get(key, 0) + int(count)
                if len(self.counts) > self.count_limit and self.kind == "numerical":
                    self.n_unique_floor = max(self.n_unique_floor, len(self.counts))
                    self.counts = None
        elif self.n_unique_floor <= self.count_limit:
            self.n_unique_floor = max(self.n_unique_floor, int(v.nunique()))
        if self.kind != "numerical":
            self.rows += k
            return
        arr = v.to_numpy(dtype="float64")
        chunk_mean = float(arr.mean())
        chunk_m2 = float(((arr - chunk_mean) ** 2).sum())
        delta = chunk_mean - self.mean
        n = self.rows + k
        self.m2 += chunk_m2 + delta * delta * self.rows * k / n
        self.mean += delta * k / n
        self.rows = n
        if self.buffer is not None:
            self.buffer.append(arr)
            self.buffered += k
            if self.buffered > self.points:
                self.buffer = None
        if self.sketch is None:
            from datasketches import kll_doubles_sketch

            self.sketch = kll_doubles_sketch(KLL_K)
        self.sketch.update(arr)

    def merge(self, other: ColumnSketch) -> None:
        """Fold another chunk's (or worker's) sketch of the same column into this one."""
        if other.rows == 0:
            return
        if self.counts is not None and other.counts is not None:
            for key, count in other.counts.items():
                self.counts[key] = self.counts.get(key, 0) + count
            if len(self.counts) > self.count_limit and self.kind == "numerical":
                self.n_unique_floor = max(self.n_unique_floor, len(self.counts))
                self.counts = None
        else:
            self.n_unique_floor = max(self.n_unique_floor, other.n_unique_floor,
                                      len(self.counts or {}), len(other.counts or {}))
            if self.kind == "numerical":
                self.counts = None
        if self.kind == "numerical":
            n = self.rows + other.rows
            delta = other.mean - self.mean
            self.m2 += other.m2 + delta * delta * self.rows * other.rows / n
            self.mean += delta * other.rows / n
            if self.buffer is not None and other.buffer is not None and self.buffered + other.buffered <= self.points:
                self.buffer += other.buffer
                self.buffered += other.buffered
            else:
                self.buffer = None
            if other.sketch is not None:
                if self.sketch is None:
                    from datasketches import kll_doubles_sketch

                    self.sketch = kll_doubles_sketch(KLL_K)
                self.sketch.merge(other.sketch)
        self.rows += other.rows

    def profile(self) -> ColumnProfile:
        import numpy as np

        counts = dict(sorted(self.counts.items())) if self.counts is not None else None
        n_unique = len(counts) if counts is not None else self.n_unique_floor
        keep = counts
        uniques = sorted(keep) if keep is not None and n_unique <= MAX_COUNTED_VALUES else []
        if self.kind != "numerical":
            return ColumnProfile(kind=self.kind, rows=self.rows, std=0.0, n_unique=n_unique, exact=True, values=[],
                                 counts=keep, uniques=uniques, integer=self.integer)
        std = math.sqrt(self.m2 / self.rows) if self.rows else 0.0
        if self.buffer is not None:
            values = np.sort(np.concatenate(self.buffer)).tolist() if self.buffer else []
            exact = True
        else:
            probs = (np.arange(self.points) + 0.5) / self.points
            values, exact = [float(x) for x in self.sketch.get_quantiles(probs)], False
        return ColumnProfile(kind=self.kind, rows=self.rows, std=std, n_unique=n_unique, exact=exact, values=values,
                             counts=keep, uniques=uniques, integer=self.integer)


def profiled_columns(columns: Iterable[str], config: DriftConfig) -> list[str]:
    """The columns a profile keeps (as :func:`~airflow_mlops.drift.profile.build_profile` picks them)."""
    keep = [c for c in columns if c not in config.exclude]
    if config.columns is not None:
        keep = [c for c in keep if c in config.columns or c == config.prediction_column]
    return keep


@dataclass
class StreamedWindow:
    """A window's profile and a zero-row frame of its columns and dtypes (for the schema check)."""

    profile: ReferenceProfile
    schema: pd.DataFrame
    chunks: int


def profile_frames(frames: Iterable[pd.DataFrame], config: DriftConfig, digest: str | None = None,
                   count_limit: int = MAX_COUNTED_VALUES,
                   transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> StreamedWindow:
    """
    One pass over a window's chunks: a sketch per kept column, updated chunk by chunk (``transform``, e.g.
    the champion's predictions, is applied to each chunk first).
    """
    sketches: dict[str, ColumnSketch] = {}
    schema = None
    rows = chunks = 0
    for df in frames:
        if transform is not None:
            df = transform(df)
        if schema is None:
            schema = df.iloc[:0].copy()
            for name in profiled_columns(df.columns, config):
                sketches[name] = ColumnSketch(kind=column_kind(df[name]), integer=df[name].dtype.kind in "iu",
                                              points=config.profile_points, count_limit=count_limit)
        for name, sketch in sketches.items():
            sketch.add(df[name])
        rows += len(df)
        chunks += 1
    if schema is None:
        import pandas as pd

        schema = pd.DataFrame()
    profile = ReferenceProfile(rows=rows, columns={n: s.profile() for n, s in sketches.items()}, digest=digest)
    return StreamedWindow(profile, schema, chunks)
