"""Server-rendered HTML of the model page (every value escaped; no script, so it embeds in the Airflow UI)."""

from __future__ import annotations

import json
import math
import re
import time
from html import escape
from typing import Any
from urllib.parse import quote

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2rem;color:#1a202c;background:#fff}
h1{font-size:1.4rem;margin:0 0 .8rem}h2{font-size:1.15rem;margin:1.4rem 0 .5rem}h3{font-size:1rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;width:100%}
th,td{border:1px solid #e2e8f0;padding:.3rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#f7fafc}code{font-size:.85rem}.muted{color:#718096}
.alias{display:inline-block;border-radius:.6rem;padding:0 .5rem;margin:0 .2rem;background:#bee3f8;font-size:.8rem}
.env-none{color:#a0aec0}details{margin:.3rem 0}summary{cursor:pointer}
dl{display:grid;grid-template-columns:max-content auto;gap:.1rem .8rem;margin:.3rem 0 .6rem}dt{font-weight:600}
.state-rolled-back{color:#c05621;font-weight:600}.state-rejected{color:#9b2c2c}.state-serving{color:#276749}
svg.plot{max-width:100%;height:auto;border:1px solid #e2e8f0;background:#fcfcfd}
svg.plot text{font-size:11px;fill:#4a5568}.better{color:#276749}.worse{color:#9b2c2c}
"""


def _ts(ms: int | float | None) -> str:
    if not ms:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ms) / 1000 if ms > 1e11 else float(ms)))


def _value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"<code>{escape(json.dumps(value, sort_keys=True))}</code>"
    return escape(str(value))


def _metric(value: str) -> str:
    """Metrics are stored as tag strings; show numbers to four significant digits, anything else as it is."""
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


_FLOAT = re.compile(r"-?\d+\.\d{5,}")


def readable(text: str) -> str:
    """Reasons as people read them: long floats rounded to four decimals."""
    return _FLOAT.sub(lambda m: f"{float(m.group(0)):.4f}", str(text))


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _dag_run_link(dag_run: str | dict[str, Any] | None) -> str:
    """``dag_id/run_id`` (history) or ``{"dag_id", "run_id"}`` (lineage) as a link into the Airflow UI."""
    if not dag_run:
        return ""
    if isinstance(dag_run, dict):
        dag_id, run_id = str(dag_run.get("dag_id") or ""), str(dag_run.get("run_id") or "")
    else:
        dag_id, _, run_id = str(dag_run).partition("/")
    if not dag_id or not run_id:
        return escape(str(dag_run))
    href = f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f'<a class="dag-run" href="{escape(href)}" target="_top">{escape(dag_id)} / {escape(run_id)}</a>'


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _aliases(aliases: list[str]) -> str:
    return "".join(f'<span class="alias">@{escape(a)}</span>' for a in aliases)


def _environments(environments: dict[str, str | None]) -> str:
    cells = []
    for env, version in environments.items():
        if version is None:
            cells.append(f'<td class="env-none" data-env="{escape(env)}">not set</td>')
        else:
            cells.append(f'<td data-env="{escape(env)}">v{escape(version)}</td>')
    head = "".join(f"<th>{escape(env)}</th>" for env in environments)
    return f'<table class="environments"><tr>{head}</tr><tr>{"".join(cells)}</tr></table>'


def index_page(models: list[dict[str, Any]], base: str) -> str:
    """Every registered model: its environments and its latest version."""
    if not models:
        body = "<h1>Registered models</h1><p class=\"muted\">No registered model yet: run train_pipeline.</p>"
        return _document("Registered models", body)
    rows = []
    for m in models:
        latest = m["versions"][0] if m["versions"] else None
        envs = ", ".join(f"{escape(e)}: v{escape(v)}" for e, v in m["environments"].items() if v) or "none"
        rows.append(
            f'<tr data-model="{escape(m["name"])}"><td><a href="{escape(base)}/models/{quote(m["name"], safe="")}">'
            f'{escape(m["name"])}</a></td><td>{len(m["versions"])}</td>'
            f'<td>{"v" + escape(latest["version"]) if latest else ""}</td><td>{envs}</td>'
            f'<td>{escape(_ts(m["updated"]))}</td></tr>'
        )
    body = (
        "<h1>Registered models</h1><table class=\"models\"><tr><th>model</th><th>versions</th><th>latest</th>"
        f"<th>aliases</th><th>updated</th></tr>{''.join(rows)}</table>"
    )
    return _document("Registered models", body)


def _lineage(lineage: dict[str, Any]) -> str:
    if not lineage:
        return '<p class="muted">no lineage recorded</p>'
    parts = []
    for group, values in lineage.items():
        if isinstance(values, dict) and group != "hyperparameters":
            items = "".join(f"<dt>{escape(k)}</dt><dd>{_value(v)}</dd>" for k, v in values.items())
            parts.append(f'<h3>{escape(group)}</h3><dl data-group="{escape(group)}">{items}</dl>')
        else:
            parts.append(f'<h3>{escape(group)}</h3><dl data-group="{escape(group)}"><dt>value</dt>'
                         f"<dd>{_value(values)}</dd></dl>")
    return "".join(parts)


def _eval_set(v: dict[str, Any]) -> str:
    ev = v.get("evaluation") or {}
    if not ev.get("set"):
        return ""
    rows = f", {ev['rows']} rows" if ev.get("rows") else ""
    return f'<code title="{escape(ev.get("digest", ""))}">{escape(ev["set"])}</code>{escape(rows)}'


def _comparison(c: dict[str, Any] | None) -> str:
    if not c or c.get("value") is None:
        return ""
    own = f"{escape(c['metric'])} {escape(_number(c['value']))}"
    if not c.get("champion_version"):
        return own + ' <span class="muted">(first model)</span>'
    if c.get("champion_value") is None:
        return own + f' <span class="muted">vs v{escape(str(c["champion_version"]))}: not recorded</span>'
    delta = c["value"] - c["champion_value"]
    better = delta >= 0 if c["higher_is_better"] else delta <= 0
    return (f"{own} vs v{escape(str(c['champion_version']))} {escape(_number(c['champion_value']))} "
            f'<span class="{"better" if better else "worse"}">({delta:+.4f})</span>')


def _scale(values: list[float], lo_px: float, hi_px: float) -> Any:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.1
    lo, hi = lo - pad, hi + pad
    return lambda v: hi_px - (v - lo) / (hi - lo) * (hi_px - lo_px), lo, hi


def metric_plot(versions: list[dict[str, Any]], width: int = 640, height: int = 220) -> str:
    """SVG: each version's gate metric (dot) beside its champion's on the same rows (ring), oldest first."""
    points = [v for v in reversed(versions) if (v.get("comparison") or {}).get("value") is not None]
    if not points:
        return '<p class="muted">no evaluated version yet</p>'
    metric = points[-1]["comparison"]["metric"]
    values = [p["comparison"]["value"] for p in points] + [p["comparison"]["champion_value"] for p in points
                                                            if p["comparison"]["champion_value"] is not None]
    y, lo, hi = _scale(values, 20, height - 30)
    step = (width - 80) / max(len(points), 1)
    parts = [f'<svg class="plot metric-plot" data-metric="{escape(metric)}" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(metric)} per version">',
             f'<text x="4" y="14">{escape(metric)}: version (dot) vs champion on the same rows (ring)</text>',
             f'<text x="4" y="{y(hi) + 12:.1f}">{_number(hi, 3)}</text>',
             f'<text x="4" y="{y(lo) - 2:.1f}">{_number(lo, 3)}</text>']
    prev = None
    for i, p in enumerate(points):
        c = p["comparison"]
        x = 60 + step * (i + 0.5)
        if prev is not None:
            parts.append(f'<line x1="{prev[0]:.1f}" y1="{prev[1]:.1f}" x2="{x:.1f}" y2="{y(c["value"]):.1f}" '
                         'stroke="#90cdf4" stroke-width="1.5"/>')
        if c["champion_value"] is not None:
            parts.append(f'<circle cx="{x:.1f}" cy="{y(c["champion_value"]):.1f}" r="5" fill="none" stroke="#718096" '
                         'stroke-width="1.5"/>')
        state = p.get("state")
        colour = "#2b6cb0" if state == "serving" else "#c05621" if state == "rolled back" else "#4a5568"
        parts.append(f'<circle class="version-point" data-version="{escape(p["version"])}" cx="{x:.1f}" '
                     f'cy="{y(c["value"]):.1f}" r="4.5" fill="{colour}"><title>v{escape(p["version"])} '
                     f'{escape(metric)}={escape(_number(c["value"]))}</title></circle>')
        parts.append(f'<text x="{x - 8:.1f}" y="{height - 10}">v{escape(p["version"])}</text>')
        prev = (x, y(c["value"]))
    parts.append("</svg>")
    return "".join(parts)


def timeline_plot(windows: list[dict[str, Any]], width: int = 760, height: int = 240) -> str:
    """SVG: per monitored window, the drift share (bar), the champion's metric (line) and the action taken."""
    if not windows:
        return '<p class="muted">no monitored window yet: drift_monitor writes one run per window</p>'
    metric = next((w["metric"] for w in windows if w.get("metric")), "metric")
    values = [w["value"] for w in windows if w.get("value") is not None]
    y, lo, hi = _scale(values or [0.0, 1.0], 30, height - 40)
    bar_h = height - 70
    step = (width - 80) / len(windows)
    parts = [f'<svg class="plot timeline-plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="drift and {escape(metric)} per window">',
             f'<text x="4" y="14">drift share (bars, 0-1), champion {escape(metric)} (line, '
             f'{_number(lo, 3)}-{_number(hi, 3)}), actions (triangles)</text>']
    prev = None
    for i, w in enumerate(windows):
        x = 60 + step * i
        share = w.get("drift_share")
        if share is not None:
            h = max(0.0, min(1.0, share)) * bar_h
            parts.append(f'<rect class="drift-bar" x="{x + 2:.1f}" y="{height - 40 - h:.1f}" width="{max(step - 4, 1):.1f}" '
                         f'height="{h:.1f}" fill="#fbd38d"><title>{escape(str(w.get("window")))}: drift share '
                         f'{share:.2f}</title></rect>')
        cx = x + step / 2
        if w.get("value") is not None:
            cy = y(w["value"])
            if prev is not None:
                parts.append(f'<line x1="{prev[0]:.1f}" y1="{prev[1]:.1f}" x2="{cx:.1f}" y2="{cy:.1f}" '
                             'stroke="#2b6cb0" stroke-width="1.5"/>')
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#2b6cb0"><title>{escape(str(w.get("window")))}: '
                         f'{escape(metric)} {escape(_number(w["value"]))}</title></circle>')
            prev = (cx, cy)
        action = w.get("action")
        if action and action != "none":
            parts.append(f'<path class="action" data-action="{escape(action)}" d="M{cx - 6:.1f},{height - 24} '
                         f'L{cx + 6:.1f},{height - 24} L{cx:.1f},{height - 34} Z" fill="#c53030">'
                         f'<title>{escape(str(w.get("window")))}: {escape(action)} ({escape(w.get("signals") or "")})'
                         "</title></path>")
        if len(windows) <= 16 or i % max(1, len(windows) // 8) == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 6}">{escape(str(w.get("start") or "")[:10])}</text>')
    parts.append("</svg>")
    rows = "".join(
        f"<tr><td>{escape(str(w.get('window')))}</td><td>{escape(_number(w.get('drift_share'), 2))}</td>"
        f"<td>{escape(_number(w.get('value')))}</td><td>{escape(w.get('signals') or '')}</td>"
        f"<td>{escape(w.get('action') or '')}</td><td>{_dag_run_link(w.get('dag_run'))}</td></tr>"
        for w in reversed(windows)
    )
    table = (f'<details><summary>windows as a table</summary><table class="timeline"><tr><th>window</th>'
             f"<th>drift share</th><th>{escape(metric)}</th><th>signals</th><th>action</th><th>DAG run</th></tr>"
             f"{rows}</table></details>")
    return "".join(parts) + table


def model_page(model: dict[str, Any], history: list[dict[str, Any]], base: str,
               mlflow_version_url: Any = None, monitoring: list[dict[str, Any]] | None = None) -> str:
    """One model: environments, versions compared on the same rows, plots, alias history, lineage per version."""
    name = model["name"]
    body = [f'<p><a href="{escape(base)}/">&larr; all models</a></p><h1>Model {escape(name)}</h1>']
    if model["description"]:
        body.append(f"<p>{escape(model['description'])}</p>")
    body.append("<h2>Aliases per environment</h2>" + _environments(model["environments"]))

    versions = model["versions"]
    body.append("<h2>Versions</h2><p class=\"muted\">Each version is compared with the champion it was evaluated "
                "against, on the same held-out rows (the evaluation set is named by its digest and row count): "
                "metrics of different sets are not comparable.</p>")
    body.append("<table class=\"versions\"><tr><th>version</th><th>aliases</th><th>state</th><th>created</th>"
                "<th>task</th><th>evaluation set</th><th>gate metric vs champion (same rows)</th><th>metrics</th>"
                "<th>gate</th><th>parent</th><th>DAG run</th><th>MLflow</th></tr>")
    for v in versions:
        metrics = ", ".join(f"{escape(k)}={escape(_number(val))}" for k, val in sorted(v["metrics"].items()))
        gate = v["gate"].get("decision", "")
        reason = readable(v["gate"].get("reason", ""))
        link = mlflow_version_url(name, v["version"]) if mlflow_version_url else None
        body.append(
            f'<tr data-version="{escape(v["version"])}"><td><a href="#v{escape(v["version"])}">v{escape(v["version"])}'
            f"</a></td><td>{_aliases(v['aliases'])}</td>"
            f'<td class="state-{escape(v.get("state", "").replace(" ", "-"))}">{escape(v.get("state", ""))}</td>'
            f"<td>{escape(_ts(v['created']))}</td><td>{escape(v['task'])}</td>"
            f"<td>{_eval_set(v)}</td><td>{_comparison(v.get('comparison'))}</td><td>{metrics}</td>"
            f'<td title="{escape(reason)}">{escape(gate)}</td>'
            f"<td>{'v' + escape(str(v['parent_version'])) if v['parent_version'] else ''}</td>"
            f"<td>{_dag_run_link(v.get('dag_run'))}</td>"
            f"<td>{f'<a href={chr(34)}{escape(link)}{chr(34)} target=_blank rel=noopener>open</a>' if link else ''}"
            "</td></tr>"
        )
    body.append("</table>")
    if versions:
        body.append("<h2>Gate metric per version</h2>" + metric_plot(versions))

    body.append("<h2>Monitoring</h2>")
    body.append(timeline_plot(monitoring or []))

    body.append("<h2>Alias history</h2>")
    if history:
        body.append("<table class=\"history\"><tr><th>time</th><th>alias</th><th>move</th>"
                    "<th>action</th><th>DAG run</th><th>reason</th></tr>")
        for move in reversed(history):
            before = f"v{move['from_version']}" if move.get("from_version") else "none"
            body.append(
                f"<tr><td>{escape(_ts(move.get('time', 0) * 1000))}</td><td>{escape(str(move.get('alias')))}</td>"
                f"<td>{escape(before)} &rarr; v{escape(str(move.get('to_version')))}</td>"
                f"<td>{escape(str(move.get('action', '')))}</td><td>{_dag_run_link(move.get('dag_run'))}</td>"
                f"<td>{escape(readable(move.get('reason', '')))}</td></tr>"
            )
        body.append("</table>")
    else:
        body.append('<p class="muted">no alias has moved yet</p>')

    body.append("<h2>Lineage</h2>")
    for i, v in enumerate(model["versions"]):
        open_attr = " open" if i == 0 else ""
        body.append(
            f'<details id="v{escape(v["version"])}" class="lineage" data-version="{escape(v["version"])}"{open_attr}>'
            f"<summary>version {escape(v['version'])} {_aliases(v['aliases'])}</summary>"
            f"{_lineage(v['lineage'])}</details>"
        )
    return _document(f"Model {name}", "".join(body))
