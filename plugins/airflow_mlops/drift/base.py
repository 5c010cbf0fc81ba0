"""Drift types shared by every engine: the config, per-column verdicts, schema changes, the summary."""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import DriftError, MlopsConfigurationError, explain

if TYPE_CHECKING:
    import pandas as pd


class DriftMode(StrEnum):
    """How the windows are compared.

    ``full``: Evidently's Report on every row. ``sample``: the same Report on a seeded sample of each window,
    with each column's test pinned to the one Evidently picks for the full windows. ``profile``: the current
    window against a cached profile of the reference (quantiles and counts), with Evidently's tests and thresholds
    applied column by column; for large windows and frequent checks.
    """

    FULL = "full"
    SAMPLE = "sample"
    PROFILE = "profile"


#: Evidently's display names of the tests this package resolves, by short name.
METHOD_NAMES = {
    "wasserstein": "Wasserstein distance (normed)",
    "ks": "K-S p_value",
    "jensenshannon": "Jensen-Shannon distance",
    "chisquare": "chi-square p_value",
    "z": "Z-test p_value",
    "psi": "PSI",
}
#: Tests whose score is a p-value: drift when the score is below the threshold; otherwise when above.
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})
DEFAULT_THRESHOLDS = {"wasserstein": 0.1, "ks": 0.05, "jensenshannon": 0.1, "chisquare": 0.05, "z": 0.05, "psi": 0.1}


def short_method(name: str | None) -> str | None:
    """``'Wasserstein distance (normed)'`` -> ``'wasserstein'``; unknown names are returned unchanged."""
    if name is None:
        return None
    for short, display in METHOD_NAMES.items():
        if name in (short, display):
            return short
    return name


#: Evidently infers an integer column with at most this many distinct values as categorical
#: (``evidently.core.datasets.INTEGER_CARDINALITY_LIMIT``); the tests follow it, the schema check does not.
INTEGER_CARDINALITY_LIMIT = 10


def test_kind(series: pd.Series, kind: str) -> str:
    """The column type the drift test uses: Evidently's inference, fixed on the reference window."""
    import pandas as pd

    if (kind == "numerical" and pd.api.types.is_integer_dtype(series)
            and series.nunique() <= INTEGER_CARDINALITY_LIMIT):
        return "categorical"
    return kind


def default_method(kind: str, reference_rows: int, n_unique: int) -> str:
    """The test Evidently 0.7 picks when none is given (``stattests.registry._get_default_stattest``)."""
    if reference_rows <= 1000:
        if kind == "numerical" and n_unique > 5:
            return "ks"
        return "chisquare" if n_unique > 2 else "z"
    if kind == "numerical" and n_unique > 5:
        return "wasserstein"
    return "jensenshannon"


def is_drift(method: str, score: float, threshold: float) -> bool:
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return False
    if method == "ks":
        return score <= threshold
    if method in P_VALUE_METHODS:
        return score < threshold
    return score >= threshold


@dataclass(frozen=True)
class DriftConfig:
    """
    :param columns: feature columns to test; ``None`` tests every column both windows share except ``exclude``.
    :param exclude: columns never tested (ids, timestamps, the label).
    :param drift_share: share of drifted columns at which the data set counts as drifted (Evidently's default 0.5).
    :param method: Evidently test for every column (``wasserstein``, ``ks``, ``psi``...); ``None``: Evidently's choice.
    :param threshold: threshold for every column; ``None``: the test's default.
    :param per_column_method: test per column, over ``method``.
    :param per_column_threshold: threshold per column, over ``threshold``.
    :param prediction_column: the champion's predictions, tested apart from the features (prediction drift).
    :param prediction_method: test for the prediction column; ``None``: Evidently's choice.
    :param prediction_threshold: threshold for the prediction column; ``None``: the test's default.
    :param mode: ``full``, ``sample`` or ``profile`` (see :class:`DriftMode`).
    :param sample_size: rows per window in ``sample`` mode (windows that are smaller are used whole).
    :param seed: seed of the sample.
    :param profile_points: quantiles kept per numerical column in a reference profile; a reference with at most
        this many rows is kept whole, so its tests are exact.
    """

    columns: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    drift_share: float = 0.5
    method: str | None = None
    threshold: float | None = None
    per_column_method: dict[str, str] = field(default_factory=dict)
    per_column_threshold: dict[str, float] = field(default_factory=dict)
    prediction_column: str | None = None
    prediction_method: str | None = None
    prediction_threshold: float | None = None
    mode: DriftMode = DriftMode.FULL
    sample_size: int = 100_000
    seed: int = 0
    profile_points: int = 2000

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", DriftMode(self.mode))
        except ValueError:
            raise MlopsConfigurationError(
                explain("Unknown drift mode", expected=f"one of {[m.value for m in DriftMode]}", received=self.mode)
            ) from None
        if not (0 < float(self.drift_share) <= 1):
            raise MlopsConfigurationError(explain("drift_share out of range", expected="0 < share <= 1",
                                                  received=self.drift_share))
        for name in ("sample_size", "profile_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 100:
                raise MlopsConfigurationError(explain(f"{name} is too small", expected="an integer >= 100",
                                                      received=value))
        if isinstance(self.columns, str):
            raise MlopsConfigurationError(explain("columns must be a list", expected="['f1', 'f2']",
                                                  received=self.columns))
        object.__setattr__(self, "method", short_method(self.method))
        object.__setattr__(self, "prediction_method", short_method(self.prediction_method))
        object.__setattr__(self, "per_column_method",
                           {k: short_method(v) for k, v in (self.per_column_method or {}).items()})
        object.__setattr__(self, "exclude", list(self.exclude or []))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DriftConfig:
        return cls(**(data or {}))

    def method_for(self, column: str) -> str | None:
        if column == self.prediction_column:
            return self.prediction_method
        return self.per_column_method.get(column) or self.method

    def threshold_for(self, column: str, method: str) -> float:
        if column == self.prediction_column and self.prediction_threshold is not None:
            return float(self.prediction_threshold)
        if column in self.per_column_threshold:
            return float(self.per_column_threshold[column])
        if self.threshold is not None and column != self.prediction_column:
            return float(self.threshold)
        return DEFAULT_THRESHOLDS.get(method, 0.05)


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str
    method: str
    threshold: float
    score: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["score"] = None if isinstance(self.score, float) and math.isnan(self.score) else float(self.score)
        return d


@dataclass(frozen=True)
class SchemaDiff:
    """Columns the current window lost, gained, or holds with another kind (numerical / categorical)."""

    missing: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    retyped: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.missing or self.added or self.retyped)

    def to_dict(self) -> dict[str, Any]:
        return {"missing": list(self.missing), "added": list(self.added), "retyped": list(self.retyped),
                "changed": self.changed}


@dataclass(frozen=True)
class DriftSummary:
    """What one drift check found; ``compact()`` is what goes to XCom and asset events."""

    mode: str
    reference_rows: int
    current_rows: int
    rows_tested: tuple[int, int]
    columns: tuple[ColumnDrift, ...]
    drift_share: float
    drift_share_threshold: float
    data_drift: bool
    prediction: ColumnDrift | None
    schema: SchemaDiff
    seconds: float
    engine: str = "evidently"

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def prediction_drift(self) -> bool | None:
        return None if self.prediction is None else self.prediction.drifted

    def signals(self) -> set[str]:
        """Signals for the trigger policy (values of :class:`airflow_mlops.drift.policy.Signal`)."""
        out = set()
        if self.data_drift:
            out.add("data_drift")
        if self.prediction_drift:
            out.add("prediction_drift")
        if self.schema.changed:
            out.add("schema_change")
        return out

    def verdicts(self) -> dict[str, bool]:
        return {c.column: c.drifted for c in self.columns}

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "engine": self.engine,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "rows_tested": list(self.rows_tested),
            "drift_share": self.drift_share,
            "drift_share_threshold": self.drift_share_threshold,
            "data_drift": self.data_drift,
            "drifted_columns": self.drifted_columns,
            "columns": [c.to_dict() for c in self.columns],
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "prediction_drift": self.prediction_drift,
            "schema": self.schema.to_dict(),
            "signals": sorted(self.signals()),
            "seconds": round(self.seconds, 4),
        }

    def compact(self) -> dict[str, Any]:
        """A few hundred bytes: verdicts and scores per column, no distributions."""
        return {
            "mode": self.mode,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "drift_share": round(self.drift_share, 4),
            "drift_share_threshold": self.drift_share_threshold,
            "data_drift": self.data_drift,
            "drifted_columns": self.drifted_columns,
            "scores": {c.column: None if math.isnan(c.score) else round(float(c.score), 5) for c in self.columns},
            "prediction_drift": self.prediction_drift,
            "prediction_score": None if self.prediction is None else round(float(self.prediction.score), 5),
            "schema_changed": self.schema.changed,
            "schema": self.schema.to_dict(),
            "signals": sorted(self.signals()),
        }


@dataclass
class DriftResult:
    """A summary plus the renderings to log: Evidently's HTML and JSON (full and sample modes) or a table."""

    summary: DriftSummary
    html: str
    evidently_json: str | None = None


# --- columns and schema ---------------------------------------------------------------------------------------


def column_kind(series: pd.Series) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "categorical"
    return "numerical"


def schema_diff(reference_kinds: dict[str, str], current: pd.DataFrame, columns: list[str] | None,
                exclude: list[str]) -> SchemaDiff:
    wanted = [c for c in (columns if columns is not None else reference_kinds) if c not in exclude]
    cur_cols = [c for c in current.columns if c not in exclude]
    missing = tuple(c for c in wanted if c not in current.columns)
    added = tuple(c for c in cur_cols if c not in reference_kinds) if columns is None else ()
    retyped = tuple(c for c in wanted if c in current.columns and c in reference_kinds
                    and column_kind(current[c]) != reference_kinds[c])
    return SchemaDiff(missing, added, retyped)


def tested_columns(reference_kinds: dict[str, str], current: pd.DataFrame, config: DriftConfig) -> list[str]:
    exclude = set(config.exclude) | ({config.prediction_column} if config.prediction_column else set())
    wanted = config.columns if config.columns is not None else list(reference_kinds)
    out = [c for c in wanted if c not in exclude and c in reference_kinds and c in current.columns
           and column_kind(current[c]) == reference_kinds[c]]
    if config.columns is not None:
        unknown = [c for c in config.columns if c not in reference_kinds]
        if unknown and len(unknown) == len(config.columns):
            raise DriftError(explain("None of the drift columns is in the reference window",
                                     expected=config.columns, received=sorted(reference_kinds)))
    return out


def summary_html(summary: DriftSummary) -> str:
    """A small self-contained page for modes without an Evidently rendering."""
    rows = "".join(
        f"<tr><td>{html.escape(c.column)}</td><td>{c.kind}</td><td>{html.escape(c.method)}</td>"
        f"<td>{c.threshold:g}</td><td>{c.score:.5g}</td><td>{'DRIFT' if c.drifted else 'ok'}</td></tr>"
        for c in (*summary.columns, *([summary.prediction] if summary.prediction else []))
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift summary</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h2>Drift ({html.escape(summary.mode)} mode)</h2>"
        f"<p>{len(summary.drifted_columns)} of {len(summary.columns)} columns drifted "
        f"(share {summary.drift_share:.2f}, threshold {summary.drift_share_threshold:g}): "
        f"<b>{'dataset drift' if summary.data_drift else 'no dataset drift'}</b>. "
        f"Reference {summary.reference_rows} rows, current {summary.current_rows} rows. "
        f"Schema: {html.escape(str(summary.schema.to_dict()))}</p>"
        "<table><tr><th>column</th><th>kind</th><th>test</th><th>threshold</th><th>score</th><th>verdict</th></tr>"
        f"{rows}</table></body></html>"
    )
