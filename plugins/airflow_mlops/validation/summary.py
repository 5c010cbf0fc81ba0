"""Pure summarising of GX validation results (plain dicts in, plain JSON-safe dicts out)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from airflow_mlops.exceptions import explain

#: Keys of the compact summary that goes to XCom (``failures`` and ``warnings`` hold one dict per expectation);
#: ``file_problems`` and ``quarantine_uri`` appear when there is something to say.
SUMMARY_KEYS = (
    "success", "evaluated", "failed", "warned", "unexpected_counts", "digest", "rows", "columns", "schema",
    "data_uri", "suite", "suite_digest", "failures", "warnings", "engine",
)
_MAX_LIST = 20
#: Longest text kept of one value anywhere in a summary, message, reason.json or artifact.
MAX_VALUE_CHARS = 200


class Severity(StrEnum):
    """What a failed expectation does: ``critical`` fails the task, ``warning`` is only reported."""

    CRITICAL = "critical"
    WARNING = "warning"

    @classmethod
    def parse(cls, value: object) -> Severity:
        text = str(getattr(value, "value", value)).strip().lower()
        if text in ("warning", "warn", "info"):
            return cls.WARNING
        if text in ("critical", "error", "fail"):
            return cls.CRITICAL
        raise ValueError(
            explain("Unknown expectation severity", expected="'critical' or 'warning'", received=value)
        )


def cap(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """A value as text of at most ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def jsonable(value: Any, max_list: int = _MAX_LIST) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN and infinities as strings, long lists and texts cut."""
    if isinstance(value, str):
        return cap(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        try:
            return jsonable(value.item(), max_list)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, max_list) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        out = [jsonable(v, max_list) for v in items[:max_list]]
        if len(items) > max_list:
            out.append(f"... {len(items) - max_list} more")
        return out
    return str(value)


def _column_label(kwargs: Mapping[str, Any], type_: str = "") -> str | None:
    if "column" in kwargs:
        return str(kwargs["column"])
    if "column_A" in kwargs and "column_B" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    if "column_list" in kwargs and not type_.startswith("expect_table"):
        return ",".join(map(str, kwargs["column_list"]))
    return None


def expectation_key(config: Mapping[str, Any]) -> str:
    """A readable name for an expectation: ``meta.name`` if set, else ``type(column)`` or ``type``."""
    meta = config.get("meta") or {}
    if meta.get("name"):
        return str(meta["name"])
    column = _column_label(config.get("kwargs") or {}, str(config.get("type", "")))
    return f"{config['type']}({column})" if column else str(config["type"])


def resolve_severity(config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Severity:
    """
    Severity of one expectation: an override (by key or by type) wins, then ``meta.severity``, then GX's own
    ``severity`` field.
    """
    overrides = overrides or {}
    key = expectation_key(config)
    for name in (key, config.get("type")):
        if name in overrides:
            return Severity.parse(overrides[name])
    meta = config.get("meta") or {}
    if meta.get("severity"):
        return Severity.parse(meta["severity"])
    if config.get("severity"):
        return Severity.parse(config["severity"])
    return Severity.CRITICAL


def severity_overrides(
    overrides: Mapping[str, Any] | None = None, warn_only: Iterable[str] | None = None
) -> dict[str, Severity]:
    """Merge the operator's ``severity_overrides`` and ``warn_only`` into one checked map."""
    merged = {str(k): Severity.parse(v) for k, v in (overrides or {}).items()}
    for name in warn_only or ():
        merged[str(name)] = Severity.WARNING
    return merged


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception") and info.get("exception_message"):
        return str(info["exception_message"])
    messages = [
        str(v.get("exception_message"))
        for v in info.values()
        if isinstance(v, Mapping) and v.get("raised_exception") and v.get("exception_message")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


def _observed(result: Mapping[str, Any]) -> Any:
    if result.get("observed_value") is None and result.get("details"):
        # GX puts what it saw there for set and column-list expectations (missing classes, extra columns).
        return result["details"]
    if "observed_value" in result:
        return result["observed_value"]
    if "unexpected_count" in result and "element_count" in result:
        return f"{result['unexpected_count']} of {result['element_count']} values unexpected"
    return None


def summarize_result(
    result: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, max_examples: int = 5
) -> dict[str, Any]:
    """
    Compact summary of ``ExpectationSuiteValidationResult.to_json_dict()``.

    ``success`` is False only when a critical expectation failed; failed warning expectations are counted in
    ``warned`` and listed under ``warnings``.
    """
    failures: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    unexpected_counts: dict[str, int] = {}
    seen: dict[str, int] = {}
    rows = list(result.get("results") or [])
    for item in rows:
        config = dict(item.get("expectation_config") or {})
        kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
        config["kwargs"] = kwargs
        key = expectation_key(config)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key = f"{key}#{seen[key]}"
        res = item.get("result") or {}
        if "unexpected_count" in res and res["unexpected_count"] is not None:
            unexpected_counts[key] = int(res["unexpected_count"])
        if item.get("success"):
            continue
        severity = resolve_severity(config, overrides)
        entry = {
            "expectation": key,
            "type": config.get("type"),
            "column": _column_label(kwargs, str(config.get("type", ""))),
            "severity": severity.value,
            "observed_value": jsonable(_observed(res)),
            "unexpected_count": res.get("unexpected_count"),
            "unexpected_percent": jsonable(res.get("unexpected_percent")),
            "element_count": res.get("element_count"),
            "examples": jsonable(list(res.get("partial_unexpected_list") or [])[:max_examples]),
            "kwargs": jsonable(kwargs),
            "exception": _exception_message(item.get("exception_info")),
        }
        (warnings if severity is Severity.WARNING else failures).append(entry)
    return {
        "success": not failures,
        "evaluated": len(rows),
        "failed": len(failures),
        "warned": len(warnings),
        "unexpected_counts": unexpected_counts,
        "failures": failures,
        "warnings": warnings,
    }


def describe_failure(entry: Mapping[str, Any], columns: Iterable[str] | None = None) -> str:
    """One line per failed expectation: its name, what was seen, a few unexpected values, GX's error."""
    parts = [str(entry["expectation"])]
    column = entry.get("column")
    if columns is not None and column and "," not in str(column) and str(column) not in set(columns):
        parts.append(f"column {column!r} is missing from the batch")
    elif entry.get("exception"):
        parts.append(f"could not be evaluated: {cap(str(entry['exception']))}")
    elif entry.get("unexpected_count") is not None and entry.get("element_count") is not None:
        pct = entry.get("unexpected_percent")
        pct_txt = f" ({pct:.3g}%)" if isinstance(pct, (int, float)) else ""
        parts.append(f"{entry['unexpected_count']} of {entry['element_count']} values unexpected{pct_txt}")
    elif str(entry.get("type", "")).startswith("expect_table_columns_to_match") and isinstance(
            entry.get("observed_value"), list) and (entry.get("kwargs") or {}).get("column_list"):
        parts.append(_columns_said(list((entry.get("kwargs") or {})["column_list"]), entry["observed_value"]))
    else:
        parts.append(f"observed {_said(entry.get('observed_value'))}")
    offenders = entry.get("type_offenders") or {}
    if offenders.get("said"):
        parts.append(str(offenders["said"]))
    if entry.get("examples"):
        label = "offending values" if offenders else "examples"
        parts.append(f"{label} {[cap(str(e), 60) if isinstance(e, str) else e for e in entry['examples']]!r}")
        if offenders.get("rows"):
            parts.append(f"first at data row(s) {', '.join(str(r) for r in offenders['rows'])}")
    return cap("; ".join(parts), 1000)


def _columns_said(expected: list[Any], observed: list[Any]) -> str:
    """A column list that did not match, said as what is missing, what is extra, or that the order differs."""
    missing = [c for c in expected if c not in observed]
    extra = [c for c in observed if c not in expected]
    said = []
    if missing:
        said.append(f"missing column(s) {missing!r}")
    if extra:
        said.append(f"unexpected column(s) {extra!r}")
    if not said:
        said.append(f"the columns are in another order: {observed!r}")
    return "; ".join(said)


def _said(observed: Any) -> str:
    """GX's observation as a person reads it: extra and missing columns or classes named, values capped."""
    if isinstance(observed, Mapping):
        mismatched = observed.get("mismatched", observed)
        if isinstance(mismatched, Mapping) and ({"unexpected", "missing"} & set(mismatched)):
            said = []
            if mismatched.get("unexpected"):
                said.append(f"unexpected {list(mismatched['unexpected'])!r}")
            if mismatched.get("missing"):
                said.append(f"missing {list(mismatched['missing'])!r}")
            return ", ".join(said)
        if isinstance(mismatched, list) and mismatched and isinstance(mismatched[0], Mapping):
            pairs = [f"position {m.get('Expected Column Position')}: expected {m.get('Expected')!r}, found "
                     f"{m.get('Found')!r}" for m in mismatched[:5]]
            return "; ".join(pairs)
        if "value_counts" in observed:
            seen = [v.get("value") for v in observed["value_counts"] if isinstance(v, Mapping)]
            return f"only the values {seen!r}"
    return cap(repr(observed))


def failure_message(summary: Mapping[str, Any], quarantine_uri: str | None = None) -> str:
    """The message of the error that fails the task: every failed expectation, then expected/received/hint."""
    lines = []
    for problem in summary.get("file_problems") or ():
        lines.append(f"The file itself is wrong: {problem}.")
    lines.append(
        f"Data batch {summary.get('data_uri')} failed {summary['failed']} of {summary['evaluated']} expectations "
        f"of suite {summary.get('suite')!r} (digest {summary.get('digest')})."
    )
    columns = summary.get("columns")
    lines += [f"  - {describe_failure(f, columns)}" for f in summary.get("failures", [])]
    if summary.get("warned"):
        lines.append(f"  ({summary['warned']} warning-only expectation(s) also failed: "
                     f"{', '.join(w['expectation'] for w in summary.get('warnings', []))})")
    where = f"the batch was copied to {quarantine_uri} with reason.json; " if quarantine_uri else ""
    lines.append(
        "Expected: every critical expectation to pass. "
        f"Received: {summary['failed']} failed critical expectation(s), listed above. "
        f"Hint: {where}fix the producer of the data, or mark an expectation warning-only "
        "(meta severity 'warning' in the suite, or the operator's warn_only) if the change is intended."
    )
    return "\n".join(lines)
