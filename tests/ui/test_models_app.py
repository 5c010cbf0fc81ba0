"""The model page inside the real Airflow API server app: login required, data from a real MLflow server."""

from __future__ import annotations

import time

import pytest

from .conftest import MODEL

pytestmark = pytest.mark.integration

PROTECTED = ["/mlops/api/models", f"/mlops/api/models/{MODEL}", f"/mlops/api/models/{MODEL}/versions/1"]
PAGES = ["/mlops/", f"/mlops/models/{MODEL}"]


@pytest.mark.parametrize("path", PROTECTED)
def test_api_without_login_is_401(api_client, path):
    resp = api_client.get(path)
    assert resp.status_code == 401
    assert "Not authenticated" in resp.text


@pytest.mark.parametrize("path", PAGES)
def test_pages_without_login_redirect_to_airflow_login(api_client, path):
    resp = api_client.get(path, follow_redirects=False)
    assert resp.status_code == 303
    location = resp.headers["location"]
    assert location.startswith("/auth/login?next=")
    assert MODEL not in resp.text  # nothing of the registry leaks into the redirect


def _forged(secret: str, expired: bool = False) -> str:
    import jwt

    now = int(time.time())
    claims = {"sub": "admin", "role": "ADMIN", "iat": now - 7200, "nbf": now - 7200,
              "exp": now - 3600 if expired else now + 3600, "aud": "apache-airflow"}
    return jwt.encode(claims, secret, algorithm="HS512")


@pytest.mark.parametrize(
    "bad_token",
    ["not-a-jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.", _forged("not-the-server-secret")],
    ids=["garbage", "alg-none", "wrong-key"],
)
@pytest.mark.parametrize("path", PROTECTED + PAGES)
def test_invalid_tokens_are_refused(api_client, bad_token, path):
    header = api_client.get(path, headers={"Authorization": f"Bearer {bad_token}"}, follow_redirects=False)
    cookie = api_client.get(path, cookies={"_token": bad_token}, follow_redirects=False)
    api_client.cookies.clear()
    for resp in (header, cookie):
        assert resp.status_code in (401, 403, 303), resp.text
        assert MODEL not in resp.text


def test_expired_token_of_the_server_is_refused(api_client):
    from airflow.configuration import conf

    expired = _forged(conf.get("api_auth", "jwt_secret"), expired=True)
    resp = api_client.get("/mlops/api/models", headers={"Authorization": f"Bearer {expired}"})
    assert resp.status_code in (401, 403)


def test_api_lists_models_with_environments_history_and_lineage(api_client, token, registered):
    auth = {"Authorization": f"Bearer {token}"}
    models = api_client.get("/mlops/api/models", headers=auth).json()["models"]
    model = next(m for m in models if m["name"] == MODEL)
    assert model["environments"] == {"staging": registered["v2"], "production": None, "champion": registered["v2"]}

    detail = api_client.get(f"/mlops/api/models/{MODEL}", headers=auth).json()
    champion_moves = [(m["from_version"], m["to_version"]) for m in detail["alias_history"] if m["alias"] == "champion"]
    assert champion_moves == [(None, registered["v1"]), (registered["v1"], registered["v2"])]
    v2 = next(v for v in detail["versions"] if v["version"] == registered["v2"])
    assert v2["parent_version"] == registered["v1"]
    assert v2["aliases"] == ["champion", "staging"]
    assert v2["lineage"]["hyperparameters"] == {"epochs": 2, "processes": 2}
    assert v2["metrics"] == {"auc": 0.72}
    assert v2["evaluation"]["rows"] == 200 and v2["evaluation"]["champion_version"] == registered["v1"]
    assert v2["comparison"] == {"metric": "auc", "value": 0.72, "champion_version": registered["v1"],
                                "champion_value": 0.69, "set": v2["evaluation"]["set"], "rows": 200,
                                "higher_is_better": True}
    assert [w["action"] for w in detail["monitoring"]] == ["none", "fine_tune"]
    assert detail["monitoring"][1]["drift_share"] == 0.875 and detail["monitoring"][1]["value"] == 0.66

    one = api_client.get(f"/mlops/api/models/{MODEL}/versions/{registered['v1']}", headers=auth).json()
    assert one["lineage"]["data"]["uri"] == "/data/window-1.parquet"
    assert api_client.get("/mlops/api/models/no-such-model", headers=auth).status_code == 404


def test_page_with_the_ui_cookie_shows_versions_and_lineage(api_client, token, registered):
    resp = api_client.get(f"/mlops/models/{MODEL}", cookies={"_token": token})
    api_client.cookies.clear()
    assert resp.status_code == 200
    html = resp.text
    assert f'data-version="{registered["v2"]}"' in html
    assert "/data/window-2.parquet" in html and "continual_learning" in html
    assert 'data-env="champion">v' + registered["v2"] in html
    # Compared on the same rows, with the set named; readable history; DAG runs as links; both plots drawn.
    assert f"auc 0.72 vs v{registered['v1']} 0.69" in html and "200 rows" in html
    assert f"none &rarr; v{registered['v1']}" in html and f"v{registered['v1']} &rarr; v{registered['v2']}" in html
    assert 'href="/dags/train_pipeline/runs/run2"' in html
    assert 'class="plot metric-plot"' in html and 'class="plot timeline-plot"' in html
    assert 'data-action="fine_tune"' in html and "0.7155555555" not in html
    index = api_client.get("/mlops/", headers={"Authorization": f"Bearer {token}"})
    assert index.status_code == 200 and f'href="/mlops/models/{MODEL}"' in index.text


def test_plugin_registers_app_and_navigation_entry(api_client, token):
    plugins = api_client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "airflow_mlops")
    assert [a["url_prefix"] for a in ours["fastapi_apps"]] == ["/mlops"]
    view = next(v for v in ours["external_views"] if v["url_route"] == "mlops-models")
    assert view["href"] == "/mlops/" and view["destination"] == "nav"
    assert set(ours["macros"]) >= {"airflow_mlops.plugin.champion_model_uri"} or ours["macros"]


SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'self'",
    "x-frame-options": "SAMEORIGIN",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def test_every_response_carries_security_headers(api_client, token, registered):
    auth = {"Authorization": f"Bearer {token}"}
    responses = [api_client.get(p) for p in PROTECTED]  # 401
    responses += [api_client.get(p, follow_redirects=False) for p in PAGES]  # 303 to the login
    responses += [api_client.get(p, headers=auth) for p in [*PROTECTED, *PAGES, "/mlops/api/models/nope"]]
    assert {r.status_code for r in responses} == {200, 303, 401, 404}
    for resp in responses:
        assert {k: resp.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, resp.request.url


@pytest.mark.parametrize("bad", ["{not json", '{"alias": "champion", "to_version": 1}', "[]",
                                 '{"alias": "champion", "from_version": "1", "to_version": "999", "time": 1.0, '
                                 '"dag_run": "x", "reason": "forged", "action": "rollback"}'])
def test_model_page_and_api_survive_bad_history_tags(api_client, token, registered, mlflow_srv, bad):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_srv.url)
    key = "mlops.alias_move.99999999999999999999"
    client.set_registered_model_tag(MODEL, key, bad)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        api = api_client.get(f"/mlops/api/models/{MODEL}", headers=auth)
        page = api_client.get(f"/mlops/models/{MODEL}", headers=auth)
    finally:
        client.delete_registered_model_tag(MODEL, key)
    assert api.status_code == 200 and page.status_code == 200
    moves = api.json()["alias_history"]
    assert [m["to_version"] for m in moves if m["alias"] == "champion"] == [registered["v1"], registered["v2"]]
    assert "forged" not in page.text and "not json" not in page.text
