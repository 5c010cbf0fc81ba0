"""Pure summarising of GX validation results (plain dicts in, plain JSON-safe dicts out)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from airflow_mlops.exceptions import explain

#: Keys of the compact summary that goes to XCom (``failures`` and ``warnings`` hold one dict per expectation).
SUMMARY_KEYS = (
    "success", "evaluated", "failed", "warned", "unexpected_counts", "digest", "rows", "columns", "schema",
    "data_uri", "suite", "suite_digest", "failures", "warnings", "engine",
)
_MAX_LIST = 20


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


def jsonable(value: Any, max_list: int = _MAX_LIST) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN and infinities as strings, long lists cut."""
    if value is None or isinstance(value, (bool, str, int)):
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


def describe_failure(entry: Mapping[str, Any]) -> str:
    """One line per failed expectation: its name, what was seen, a few unexpected values, GX's error."""
    parts = [str(entry["expectation"])]
    if entry.get("exception"):
        parts.append(f"could not be evaluated: {entry['exception']}")
    elif entry.get("unexpected_count") is not None and entry.get("element_count") is not None:
        pct = entry.get("unexpected_percent")
        pct_txt = f" ({pct:.3g}%)" if isinstance(pct, (int, float)) else ""
        parts.append(f"{entry['unexpected_count']} of {entry['element_count']} values unexpected{pct_txt}")
    else:
        parts.append(f"observed {entry.get('observed_value')!r}")
    if entry.get("examples"):
        parts.append(f"examples {entry['examples']!r}")
    return "; ".join(parts)


def failure_message(summary: Mapping[str, Any], quarantine_uri: str | None = None) -> str:
    """The message of the error that fails the task: every failed expectation, then expected/received/hint."""
    lines = [
        f"Data batch {summary.get('data_uri')} failed {summary['failed']} of {summary['evaluated']} expectations "
        f"of suite {summary.get('suite')!r} (digest {summary.get('digest')})."
    ]
    lines += [f"  - {describe_failure(f)}" for f in summary.get("failures", [])]
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
