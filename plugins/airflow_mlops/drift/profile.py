"""A cached reference profile (quantiles and counts per column) and Evidently's drift tests applied against it."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.drift.base import (
    INTEGER_CARDINALITY_LIMIT,
    ColumnDrift,
    DriftConfig,
    DriftSummary,
    SchemaDiff,
    column_kind,
    default_method,
    is_drift,
    schema_diff,
    tested_columns,
)
from airflow_mlops.exceptions import DriftError, MlopsConfigurationError, explain

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airflow_mlops.hooks.storage import Storage

PROFILE_VERSION = 1
#: Value counts are kept for columns with at most this many distinct values (Evidently bins by value up to 20).
MAX_COUNTED_VALUES = 20
#: Tests that can run against a profile.
PROFILE_METHODS = ("wasserstein", "ks", "jensenshannon", "chisquare", "z")


@dataclass
class ColumnProfile:
    """One reference column: its values (whole when small, else quantiles), spread and value counts."""

    kind: str
    rows: int
    std: float
    n_unique: int
    exact: bool
    values: list[float] = field(default_factory=list)
    counts: dict[str, int] | None = None
    uniques: list[Any] = field(default_factory=list)
    integer: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def test_kind(self) -> str:
        """The type the drift test uses, as :func:`~airflow_mlops.drift.report.test_kind` decides it."""
        if self.kind == "numerical" and self.integer and self.n_unique <= INTEGER_CARDINALITY_LIMIT:
            return "categorical"
        return self.kind


@dataclass
class ReferenceProfile:
    """Everything the drift tests need from a reference window, small enough to cache as JSON."""

    rows: int
    columns: dict[str, ColumnProfile]
    digest: str | None = None
    created: float = field(default_factory=time.time)

    def kinds(self) -> dict[str, str]:
        return {name: col.kind for name, col in self.columns.items()}

    def to_json(self) -> bytes:
        data = {"version": PROFILE_VERSION, "rows": self.rows, "digest": self.digest, "created": self.created,
                "columns": {k: v.to_dict() for k, v in self.columns.items()}}
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> ReferenceProfile:
        data = json.loads(raw.decode("utf-8"))
        if data.get("version") != PROFILE_VERSION:
            raise DriftError(explain("Unsupported reference profile version", expected=PROFILE_VERSION,
                                     received=data.get("version"), hint="delete the cached profile to rebuild it."))
        return cls(rows=int(data["rows"]), digest=data.get("digest"), created=float(data.get("created") or 0),
                   columns={k: ColumnProfile(**v) for k, v in data["columns"].items()})

    def save(self, storage: Storage, uri: str) -> None:
        storage.write_bytes(uri, self.to_json())

    @classmethod
    def load(cls, storage: Storage, uri: str) -> ReferenceProfile:
        return cls.from_json(storage.read_bytes(uri))


def _key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def build_profile(reference: pd.DataFrame, config: DriftConfig | None = None, digest: str | None = None) -> ReferenceProfile:
    """Profile every tested column (and the prediction column) of ``reference``."""
    import numpy as np

    config = config or DriftConfig()
    keep = [c for c in reference.columns if c not in config.exclude]
    if config.columns is not None:
        keep = [c for c in keep if c in config.columns or c == config.prediction_column]
    points = config.profile_points
    columns: dict[str, ColumnProfile] = {}
    for name in keep:
        series = reference[name].dropna()
        kind = column_kind(reference[name])
        n_unique = int(series.nunique())
        counts = None
        uniques: list[Any] = []
        if kind == "categorical" or n_unique <= MAX_COUNTED_VALUES:
            vc = series.value_counts()
            counts = {_key(k): int(v) for k, v in vc.items()}
        if n_unique <= MAX_COUNTED_VALUES:
            uniques = sorted(counts or {})
        if kind == "numerical":
            arr = series.to_numpy(dtype="float64")
            std = float(np.std(arr)) if len(arr) else 0.0
            if len(arr) <= points:
                values, exact = np.sort(arr).tolist(), True
            else:
                # Mid-point quantiles: the best equal-weight summary of the distribution for the Wasserstein distance.
                probs = (np.arange(points) + 0.5) / points
                values, exact = np.quantile(arr, probs).tolist(), False
        else:
            std, values, exact = 0.0, [], True
        columns[name] = ColumnProfile(kind=kind, rows=int(len(series)), std=std, n_unique=n_unique, exact=exact,
                                      values=values, counts=counts, uniques=uniques,
                                      integer=reference[name].dtype.kind in "iu")
    return ReferenceProfile(rows=len(reference), columns=columns, digest=digest)


def _n_unique(col: ColumnProfile, current: pd.Series) -> int:
    """Distinct values of reference and current together, as Evidently counts them to pick a test.

    Only the boundaries 2 and 5 matter to that choice, so a reference with more than 5 values needs no union.
    """
    if col.n_unique > 5 or col.counts is None:
        return col.n_unique
    return len(set(col.counts) | {_key(v) for v in current.dropna().unique()})


def _proportions(col: ColumnProfile, current: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    import numpy as np

    ref_counts = col.counts or {}
    cur_counts: dict[str, int] = {}
    for value, count in current.value_counts().items():  # count first, then name the few distinct values
        cur_counts[_key(value)] = cur_counts.get(_key(value), 0) + int(count)
    keys = sorted(set(ref_counts) | set(cur_counts))
    ref = np.array([ref_counts.get(k, 0) for k in keys], dtype="float64")
    cur = np.array([cur_counts.get(k, 0) for k in keys], dtype="float64")
    return keys, ref, cur


def column_score(col: ColumnProfile, current: pd.Series, method: str) -> float:
    """Evidently's test ``method`` between the profiled reference column and the current values."""
    import numpy as np
    from scipy import stats

    if method not in PROFILE_METHODS:
        raise MlopsConfigurationError(
            explain("This drift test cannot run against a reference profile", expected=f"one of {PROFILE_METHODS}",
                    received=method, hint="use mode='sample' or mode='full' for other tests.")
        )
    if method in ("wasserstein", "ks"):
        if col.kind != "numerical":
            raise MlopsConfigurationError(explain(f"{method} needs a numerical column", expected="numerical",
                                                  received=col.kind))
        cur = current.dropna().to_numpy(dtype="float64")
        ref = np.asarray(col.values, dtype="float64")
        if method == "wasserstein":
            return float(stats.wasserstein_distance(ref, cur) / max(col.std, 0.001))
        if col.exact:
            return float(stats.ks_2samp(ref, cur)[1])
        # The statistic from the quantiles, the p-value for the real sample sizes (ks_2samp's asymptotic form).
        d = float(stats.ks_2samp(ref, cur)[0])
        en = col.rows * len(cur) / (col.rows + len(cur))
        return float(stats.kstwo.sf(d, np.round(en)))
    if col.counts is None:
        if method != "jensenshannon":
            raise MlopsConfigurationError(
                explain(f"{method} needs value counts, the profile has quantiles only", expected="a column with at "
                        f"most {MAX_COUNTED_VALUES} distinct values", received=f"{col.n_unique} distinct values")
            )
        # Numerical with many values: Evidently bins the pooled data (Sturges); the quantiles stand in for the
        # reference rows, weighted to their real count.
        cur = current.dropna().to_numpy(dtype="float64")
        ref = np.asarray(col.values, dtype="float64")
        n_bins = int(np.ceil(np.log2(col.rows + len(cur)))) + 1
        lo, hi = min(ref.min(), cur.min()), max(ref.max(), cur.max())
        edges = np.linspace(lo, hi, n_bins + 1)
        p = np.histogram(ref, edges)[0] / max(len(ref), 1)
        q = np.histogram(cur, edges)[0] / max(len(cur), 1)
        from scipy.spatial import distance

        return float(distance.jensenshannon(p, q))
    _, ref, cur = _proportions(col, current)
    return _count_score(method, ref, cur)


def profile_drift(profile: ReferenceProfile, current: pd.DataFrame, config: DriftConfig) -> DriftSummary:
    """Every tested column of ``current`` against the profile, with Evidently's tests and thresholds."""
    return _drift_against(profile, current, len(current), config, "profile",
                          lambda col, name: _n_unique(col, current[name]),
                          lambda col, name, method: column_score(col, current[name], method))


def compare_profiles(profile: ReferenceProfile, current: ReferenceProfile, schema: pd.DataFrame,
                     config: DriftConfig, engine: str = "streaming") -> DriftSummary:
    """
    The current window's profile against the reference profile: the same tests and thresholds as
    :func:`profile_drift`, with the current window summarised too (counts exact, quantiles from its sketch).

    ``schema`` is a frame with the current window's columns and dtypes (it may have no rows).
    """
    return _drift_against(profile, schema, current.rows, config, "profile",
                          lambda col, name: _n_unique_profiles(col, current.columns[name]),
                          lambda col, name, method: profile_score(col, current.columns[name], method),
                          engine=engine)


def _n_unique_profiles(col: ColumnProfile, cur: ColumnProfile) -> int:
    if col.n_unique > 5 or col.counts is None:
        return col.n_unique
    if cur.counts is None:
        return max(col.n_unique, cur.n_unique)
    return len(set(col.counts) | set(cur.counts))


def profile_score(col: ColumnProfile, cur: ColumnProfile, method: str) -> float:
    """:func:`column_score` with the current column summarised as a profile as well."""
    import numpy as np
    from scipy import stats

    if method not in PROFILE_METHODS:
        raise MlopsConfigurationError(
            explain("This drift test cannot run against a reference profile", expected=f"one of {PROFILE_METHODS}",
                    received=method, hint="use the pandas engine with mode='sample' or 'full' for other tests.")
        )
    if not cur.rows:
        return float("nan")
    if method in ("wasserstein", "ks") or (method == "jensenshannon" and col.counts is None):
        if col.kind != "numerical" or cur.kind != "numerical":
            raise MlopsConfigurationError(explain(f"{method} needs a numerical column", expected="numerical",
                                                  received=col.kind))
        ref = np.asarray(col.values, dtype="float64")
        now = np.asarray(cur.values, dtype="float64")
        if method == "wasserstein":
            return float(stats.wasserstein_distance(ref, now) / max(col.std, 0.001))
        if method == "ks":
            if col.exact and cur.exact:
                return float(stats.ks_2samp(ref, now)[1])
            d = float(stats.ks_2samp(ref, now)[0])
            en = col.rows * cur.rows / (col.rows + cur.rows)
            return float(stats.kstwo.sf(d, np.round(en)))
        from scipy.spatial import distance

        n_bins = int(np.ceil(np.log2(col.rows + cur.rows))) + 1
        edges = np.linspace(min(ref.min(), now.min()), max(ref.max(), now.max()), n_bins + 1)
        p = np.histogram(ref, edges)[0] / max(len(ref), 1)
        q = np.histogram(now, edges)[0] / max(len(now), 1)
        return float(distance.jensenshannon(p, q))
    if cur.counts is None:
        raise MlopsConfigurationError(
            explain(f"{method} needs the current window's value counts", expected="a column with few distinct "
                    "values in the current window", received=f"about {cur.n_unique} distinct values",
                    hint="set this column's test to wasserstein or ks (per_column_method).")
        )
    keys = sorted(set(col.counts or {}) | set(cur.counts))
    ref_c = np.array([(col.counts or {}).get(k, 0) for k in keys], dtype="float64")
    cur_c = np.array([cur.counts.get(k, 0) for k in keys], dtype="float64")
    return _count_score(method, ref_c, cur_c)


def _count_score(method: str, ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy import stats

    if method == "jensenshannon":
        from scipy.spatial import distance

        return float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum()))
    if method == "chisquare":
        expected = ref * (cur.sum() / ref.sum())
        return float(stats.chisquare(cur, expected)[1])
    # z: two proportions, the first key against the rest (Evidently's convention).
    if len(ref) == 1:
        return 1.0
    n1, n2 = ref.sum(), cur.sum()
    p1, p2 = 1 - ref[0] / n1, 1 - cur[0] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    denom = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if denom == 0:
        return 1.0
    return float(2 * (1 - stats.norm.cdf(abs((p1 - p2) / denom))))


def _drift_against(profile: ReferenceProfile, current: pd.DataFrame, current_rows: int, config: DriftConfig,
                   mode: str, n_unique: Any, score: Any, engine: str = "profile") -> DriftSummary:
    started = time.perf_counter()
    kinds = profile.kinds()
    pred = config.prediction_column
    if pred and (pred not in kinds or pred not in current.columns):
        raise DriftError(explain("The prediction column is missing", expected=f"{pred!r} in the profile and the "
                                 "current window", received={"profile": pred in kinds,
                                                             "current": pred in current.columns},
                                 hint="build the profile from the champion's predictions on the reference."))
    feature_kinds = {k: v for k, v in kinds.items() if k != pred}
    schema: SchemaDiff = schema_diff(feature_kinds, current.drop(columns=[pred] if pred else []), config.columns,
                                     config.exclude)
    columns = tested_columns(kinds, current, config)
    if not columns:
        raise DriftError(explain("No column to test for drift", expected="columns shared by profile and window",
                                 received={"profile": sorted(kinds), "current": sorted(current.columns)}))
    results = []
    for name in [*columns, *([pred] if pred else [])]:
        col = profile.columns[name]
        kind = col.test_kind()
        method = config.method_for(name) or default_method(kind, col.rows, n_unique(col, name))
        threshold = config.threshold_for(name, method)
        value = score(col, name, method)
        results.append(ColumnDrift(name, kind, method, threshold, value, is_drift(method, value, threshold)))
    features = tuple(results[: len(columns)])
    share = sum(c.drifted for c in features) / len(features)
    return DriftSummary(
        mode=mode,
        reference_rows=profile.rows,
        current_rows=current_rows,
        rows_tested=(profile.rows, current_rows),
        columns=features,
        drift_share=share,
        drift_share_threshold=config.drift_share,
        data_drift=share >= config.drift_share,
        prediction=results[-1] if pred else None,
        schema=schema,
        seconds=time.perf_counter() - started,
        engine=engine,
    )
