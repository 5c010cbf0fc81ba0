"""Server-rendered HTML of the model page (every value escaped; no script, so it embeds in the Airflow UI)."""

from __future__ import annotations

import json
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


def model_page(model: dict[str, Any], history: list[dict[str, Any]], base: str,
               mlflow_version_url: Any = None) -> str:
    """One model: environments, versions with metrics and gate decision, alias history, lineage per version."""
    name = model["name"]
    body = [f'<p><a href="{escape(base)}/">&larr; all models</a></p><h1>Model {escape(name)}</h1>']
    if model["description"]:
        body.append(f"<p>{escape(model['description'])}</p>")
    body.append("<h2>Aliases per environment</h2>" + _environments(model["environments"]))

    body.append("<h2>Versions</h2><table class=\"versions\"><tr><th>version</th><th>aliases</th><th>status</th>"
                "<th>created</th><th>metrics</th><th>gate</th><th>parent</th><th>MLflow</th></tr>")
    for v in model["versions"]:
        metrics = ", ".join(f"{escape(k)}={escape(_metric(val))}" for k, val in v["metrics"].items())
        gate = escape(v["gate"].get("decision", ""))
        link = mlflow_version_url(name, v["version"]) if mlflow_version_url else None
        body.append(
            f'<tr data-version="{escape(v["version"])}"><td><a href="#v{escape(v["version"])}">v{escape(v["version"])}'
            f"</a></td><td>{_aliases(v['aliases'])}</td><td>{escape(v['status'] or '')}</td>"
            f"<td>{escape(_ts(v['created']))}</td><td>{metrics}</td><td>{gate}</td>"
            f"<td>{'v' + escape(str(v['parent_version'])) if v['parent_version'] else ''}</td>"
            f"<td>{f'<a href={chr(34)}{escape(link)}{chr(34)} target=_blank rel=noopener>open</a>' if link else ''}"
            "</td></tr>"
        )
    body.append("</table>")

    body.append("<h2>Alias history</h2>")
    if history:
        body.append("<table class=\"history\"><tr><th>time</th><th>alias</th><th>from</th><th>to</th>"
                    "<th>action</th><th>DAG run</th><th>reason</th></tr>")
        for move in reversed(history):
            body.append(
                f"<tr><td>{escape(_ts(move.get('time', 0) * 1000))}</td><td>{escape(str(move.get('alias')))}</td>"
                f"<td>{escape(str(move.get('from_version') or '-'))}</td><td>v{escape(str(move.get('to_version')))}</td>"
                f"<td>{escape(str(move.get('action', '')))}</td><td>{escape(str(move.get('dag_run', '')))}</td>"
                f"<td>{escape(str(move.get('reason', '')))}</td></tr>"
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
