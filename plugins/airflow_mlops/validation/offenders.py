"""The values that make a column fail its type expectation: the offending ones, not GX's first values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: Type expectations whose failures are explained by the values that do not fit the expected kind.
TYPE_EXPECTATIONS = ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type")

_INTEGER = ("int", "uint", "long", "short", "byte", "integer")
_FLOAT = ("float", "double", "decimal", "number", "numeric")
_BOOL = ("bool",)
_DATETIME = ("datetime", "timestamp", "date")
_KIND_WORDS = {"integer": "whole numbers", "float": "numbers", "bool": "true/false values",
               "datetime": "dates or timestamps"}


def expected_kind(type_list: Iterable[Any]) -> str | None:
    """The broadest value kind a type list admits (``float`` admits integers), or None for text/object types."""
    kinds = set()
    for name in type_list:
        low = str(name).lower()
        if low.startswith(_BOOL):
            kinds.add("bool")
        elif low.startswith(_DATETIME):
            kinds.add("datetime")
        elif low.startswith(_FLOAT):
            kinds.add("float")
        elif low.startswith(_INTEGER) or low.removeprefix("u").startswith("int"):
            kinds.add("integer")
        else:
            return None  # text or object admitted: any value fits
    for kind in ("float", "integer", "datetime", "bool"):
        if kind in kinds:
            return kind
    return None


def _bad_mask(series: pd.Series, kind: str) -> pd.Series:
    """True where a present value is not of ``kind`` (missing values are another expectation's business)."""
    import pandas as pd

    present = series.notna()
    if kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(series):
            return present & False
        parsed = pd.to_datetime(series.where(present), errors="coerce", format="mixed")
        return present & parsed.isna()
    if kind == "bool":
        if pd.api.types.is_bool_dtype(series):
            return present & False
        text = series.astype(str).str.strip().str.lower()
        return present & ~text.isin(["true", "false", "0", "1", "0.0", "1.0"])
    if pd.api.types.is_bool_dtype(series):
        return present
    numbers = pd.to_numeric(series.where(present), errors="coerce")
    bad = present & numbers.isna()
    if kind == "integer":
        finite = numbers.where(numbers.abs() != float("inf"))
        bad |= present & numbers.notna() & ((finite % 1 != 0) | finite.isna())
    return bad


@dataclass
class TypeOffenders:
    """Counts and the first offending values of one column against a type list, fed chunk by chunk."""

    column: str
    kind: str
    limit: int = 5
    rows: int = 0
    missing: int = 0
    count: int = 0
    examples: list[Any] = field(default_factory=list)
    at_rows: list[int] = field(default_factory=list)
    dtype: str | None = None

    def add(self, series: pd.Series) -> None:
        """One chunk of the column, in table order."""
        bad = _bad_mask(series, self.kind)
        self.dtype = self.dtype or str(series.dtype)
        if bad.any():
            positions = [self.rows + int(k) for k in bad.to_numpy().nonzero()[0][: self.limit]]
            self.at_rows = (self.at_rows + [p + 1 for p in positions])[: self.limit]
            for value in series[bad].tolist():  # distinct values, first seen first
                if len(self.examples) >= self.limit:
                    break
                if value not in self.examples:
                    self.examples.append(value)
        self.rows += len(series)
        self.missing += int(series.isna().sum())
        self.count += int(bad.sum())

    def said(self) -> str:
        """Why the column has the type it has, as a person reads it."""
        words = _KIND_WORDS[self.kind]
        if self.count:
            return f"read as {self.dtype} because {self.count} of {self.rows} value(s) are not {words}"
        if self.missing and self.kind in ("integer", "bool"):
            return f"read as {self.dtype} because {self.missing} of {self.rows} value(s) are missing"
        return f"read as {self.dtype}; every present value is one of the {words} expected"


def type_failures(core: Mapping[str, Any]) -> dict[str, str]:
    """Column -> expected kind for each failed type expectation of a summary that can be explained by values."""
    out = {}
    for entry in [*core.get("failures", []), *core.get("warnings", [])]:
        kwargs = entry.get("kwargs") or {}
        if entry.get("type") not in TYPE_EXPECTATIONS or not isinstance(kwargs.get("column"), str):
            continue
        types = kwargs.get("type_list") or [kwargs.get("type_")]
        kind = expected_kind(t for t in types if t)
        if kind:
            out[kwargs["column"]] = kind
    return out


def find_offenders(frames: Iterable[pd.DataFrame], kinds: Mapping[str, str], limit: int) -> dict[str, TypeOffenders]:
    """The offending values of each column in ``kinds`` over ``frames`` (one DataFrame, or chunks in order)."""
    found = {c: TypeOffenders(c, k, limit) for c, k in kinds.items()}
    for df in frames:
        for column, acc in found.items():
            if column in df.columns:
                acc.add(df[column])
    return {c: acc for c, acc in found.items() if acc.rows}


def refine_type_failures(core: dict[str, Any], offenders: Mapping[str, TypeOffenders]) -> dict[str, Any]:
    """The summary with each explained type failure's examples replaced by the offending values."""
    from airflow_mlops.validation.summary import jsonable

    def refine(entry: dict[str, Any]) -> dict[str, Any]:
        column = (entry.get("kwargs") or {}).get("column")
        acc = offenders.get(column) if entry.get("type") in TYPE_EXPECTATIONS else None
        if acc is None:
            return entry
        return {**entry, "type_offenders": {"count": acc.count, "missing": acc.missing, "dtype": acc.dtype,
                                            "rows": acc.at_rows, "said": acc.said()},
                "examples": jsonable(acc.examples[: acc.limit])}

    return {**core, "failures": [refine(e) for e in core["failures"]],
            "warnings": [refine(e) for e in core["warnings"]]}
