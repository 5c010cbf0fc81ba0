"""Expectation suites: load one kept as JSON, build one from a feature spec, turn either into a GX suite."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import StorageError, explain
from airflow_mlops.hooks.storage import Storage, get_storage
from airflow_mlops.validation.errors import SuiteError

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

_DTYPE_ALIASES: dict[str, list[str]] = {
    # What pandas reports for string columns depends on the reader and the pandas options.
    "object": ["object", "object_", "str", "string", "StringDtype"],
    "string": ["object", "object_", "str", "string", "StringDtype"],
    "str": ["object", "object_", "str", "string", "StringDtype"],
    "bool": ["bool", "bool_", "boolean"],
}


def _read_json(path: str, storage: Storage | None, what: str) -> dict[str, Any]:
    storage = storage or get_storage(path)
    try:
        raw = storage.read_bytes(path)
    except (StorageError, OSError) as exc:
        raise SuiteError(
            explain(f"Cannot read the {what} {path}", expected=f"a JSON {what} file", received=str(exc),
                    hint="check suite_path; suites live under include/expectations/.")
        ) from exc
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SuiteError(
            explain(f"The {what} {path} is not valid JSON", expected="a UTF-8 JSON object", received=str(exc),
                    hint="fix the file; `python -m json.tool FILE` shows where it breaks.")
        ) from exc
    if not isinstance(doc, dict):
        raise SuiteError(explain(f"The {what} {path} is not a JSON object", expected="{...}",
                                 received=type(doc).__name__))
    return doc


def check_suite_dict(suite: dict[str, Any], source: str = "<suite>") -> dict[str, Any]:
    """Check the shape GX expects (name, expectations with type and kwargs) without importing GX."""
    name = suite.get("name")
    expectations = suite.get("expectations")
    if not isinstance(name, str) or not name:
        raise SuiteError(explain(f"Suite {source} has no name", expected='"name": "<non-empty string>"',
                                 received=name))
    if not isinstance(expectations, list) or not expectations:
        raise SuiteError(explain(f"Suite {source} lists no expectations",
                                 expected='"expectations": [{"type": ..., "kwargs": {...}}, ...]',
                                 received=type(expectations).__name__ if expectations is not None else None,
                                 hint="an empty suite would pass every batch; add at least one expectation."))
    for i, exp in enumerate(expectations):
        if not isinstance(exp, dict) or not isinstance(exp.get("type"), str) or not isinstance(
            exp.get("kwargs", {}), dict
        ):
            raise SuiteError(explain(f"Expectation #{i} of suite {source} is malformed",
                                     expected='{"type": "expect_...", "kwargs": {...}, "meta": {...}}',
                                     received=exp))
    return suite


def load_suite_dict(path: str, storage: Storage | None = None) -> dict[str, Any]:
    """Read a suite kept as GX JSON (``{"name", "expectations": [{"type", "kwargs", "meta"}]}``)."""
    return check_suite_dict(_read_json(path, storage, "expectation suite"), path)


def suite_digest(suite: dict[str, Any]) -> str:
    """A stable digest of the suite's content (key order and whitespace do not matter)."""
    import hashlib

    canonical = json.dumps(suite, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def build_gx_suite(suite: dict[str, Any]) -> ExpectationSuite:
    """
    The GX ``ExpectationSuite`` for a suite dict.

    GX's own constructor logs and drops expectations it cannot build; here each one is built first so a typo
    in a type or a missing kwarg fails loudly and names the expectation.
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    check_suite_dict(suite)
    built = []
    for i, exp in enumerate(suite["expectations"]):
        try:
            config = ExpectationConfiguration(
                type=exp["type"],
                kwargs=dict(exp.get("kwargs", {})),
                meta=dict(exp.get("meta") or {}),
                **({"severity": exp["severity"]} if exp.get("severity") else {}),
            )
            built.append(config.to_domain_obj())
        except Exception as exc:  # GX raises ExpectationNotFoundError, pydantic errors, ValueError ...
            raise SuiteError(
                explain(f"Expectation #{i} ({exp.get('type')}) of suite {suite['name']!r} is invalid",
                        expected="a GX 1.x expectation type with its required kwargs",
                        received=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                        hint="see the expectation gallery for the type's arguments (GX 1.x names).")
            ) from exc
    return gx.ExpectationSuite(name=suite["name"], expectations=built, meta=dict(suite.get("meta") or {}))


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a feature spec."""

    name: str
    dtype: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[Any] | None = None
    regex: str | None = None
    unique: bool = False
    increasing: bool = False
    severity: str = "critical"

    def __post_init__(self) -> None:
        if not self.name or not self.dtype:
            raise SuiteError(explain("A feature spec column needs a name and a dtype",
                                     expected='{"name": "temperature", "dtype": "float64"}',
                                     received={"name": self.name, "dtype": self.dtype}))
        if self.min is not None and self.max is not None and self.min > self.max:
            raise SuiteError(explain(f"Column {self.name!r} has min above max", expected="min <= max",
                                     received={"min": self.min, "max": self.max}))
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise SuiteError(explain(f"Column {self.name!r} has an invalid regex", expected="a Python regex",
                                         received=self.regex, hint=str(exc))) from exc
        if self.severity not in ("critical", "warning"):
            raise SuiteError(explain(f"Column {self.name!r} has an unknown severity",
                                     expected="'critical' or 'warning'", received=self.severity))


@dataclass(frozen=True)
class FeatureSpec:
    """
    The columns a model consumes: dtypes, ranges, categorical sets and the target.

    ``ordered`` asks for the exact column order, otherwise the exact set; ``row_count`` bounds the batch size.
    """

    name: str
    columns: list[ColumnSpec]
    target: str | None = None
    ordered: bool = True
    row_count: tuple[int | None, int | None] = (1, None)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if not names:
            raise SuiteError(explain(f"Feature spec {self.name!r} lists no columns", expected="one or more columns",
                                     received=[]))
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SuiteError(explain(f"Feature spec {self.name!r} repeats columns", expected="unique column names",
                                     received=dupes))
        if self.target is not None and self.target not in names:
            raise SuiteError(explain(f"The target of feature spec {self.name!r} is not one of its columns",
                                     expected=f"one of {names}", received=self.target))

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns if c.name != self.target]

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureSpec:
        try:
            columns = [ColumnSpec(**c) for c in doc["columns"]]
            rows = doc.get("row_count") or {}
            return cls(
                name=doc["name"],
                columns=columns,
                target=doc.get("target"),
                ordered=bool(doc.get("ordered", True)),
                row_count=(rows.get("min", 1), rows.get("max")),
                meta=dict(doc.get("meta") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise SuiteError(explain("Malformed feature spec", expected='{"name", "columns": [{"name", "dtype", '
                                     '...}], "target", "row_count": {"min", "max"}}', received=str(exc))) from exc


def load_feature_spec(path: str, storage: Storage | None = None) -> FeatureSpec:
    return FeatureSpec.from_dict(_read_json(path, storage, "feature spec"))


def _exp(type_: str, severity: str = "critical", **kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "kwargs": kwargs, "meta": {}}
    if severity != "critical":
        out["meta"]["severity"] = severity
    return out


def suite_from_feature_spec(spec: FeatureSpec, name: str | None = None) -> dict[str, Any]:
    """Expectations implied by a feature spec, as a suite dict (plain data: no GX needed to build it)."""
    names = [c.name for c in spec.columns]
    exps: list[dict[str, Any]] = []
    if spec.ordered:
        exps.append(_exp("expect_table_columns_to_match_ordered_list", column_list=names))
    else:
        exps.append(_exp("expect_table_columns_to_match_set", column_set=names, exact_match=True))
    lo, hi = spec.row_count
    if lo is not None or hi is not None:
        exps.append(_exp("expect_table_row_count_to_be_between", min_value=lo, max_value=hi))
    for col in spec.columns:
        sev = col.severity
        exps.append(_exp("expect_column_values_to_be_in_type_list", sev, column=col.name,
                         type_list=_DTYPE_ALIASES.get(col.dtype, [col.dtype])))
        if not col.nullable:
            exps.append(_exp("expect_column_values_to_not_be_null", sev, column=col.name))
        if col.min is not None or col.max is not None:
            exps.append(_exp("expect_column_values_to_be_between", sev, column=col.name, min_value=col.min,
                             max_value=col.max))
        if col.categories is not None:
            exps.append(_exp("expect_column_values_to_be_in_set", sev, column=col.name,
                             value_set=list(col.categories)))
        if col.regex is not None:
            exps.append(_exp("expect_column_values_to_match_regex", sev, column=col.name, regex=col.regex))
        if col.unique:
            exps.append(_exp("expect_column_values_to_be_unique", sev, column=col.name))
        if col.increasing:
            exps.append(_exp("expect_column_values_to_be_increasing", sev, column=col.name, strictly=True))
    meta = {"feature_spec": spec.name, "target": spec.target, **spec.meta}
    return {"name": name or spec.name, "expectations": exps, "meta": meta}
