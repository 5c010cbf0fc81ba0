"""Headless Chromium (Debian's, driven by Playwright): log in, trigger train_pipeline from its Params form,
find the new version and its lineage on the plugin's model page. Screenshots go to test-artifacts/e2e/."""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A window the scheduler test did not train on: the run registers a new version.
FORM = {"window_start": "1953-01-01", "window_end": "1955-12-31", "epochs": "1", "batch_size": "128",
        "min_auc": "0.5"}


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    # A fresh profile each time: no cookie or cache from an earlier run.
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="mlops-chromium-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


def _login(page, api) -> None:
    page.wait_for_selector('input[name="username"]')
    page.fill('input[name="username"]', "admin")
    page.fill('input[name="password"]', api.password)
    page.get_by_role("button", name="Sign in").click()


def test_model_page_sends_a_browser_without_login_to_airflow_login(browser, airflow_stack, artifacts_dir):
    page = browser.new_page()
    page.goto(f"{airflow_stack.url}/mlops/models/rainfall")
    page.wait_for_selector('input[name="username"]')
    assert "/auth/login" in page.url
    assert "Lineage" not in page.content()
    page.screenshot(path=str(artifacts_dir / "0-model-page-without-login.png"))
    page.close()


def test_trigger_from_the_params_form_and_find_the_version_on_the_model_page(browser, airflow_stack,
                                                                           mlflow_client, artifacts_dir):
    api = airflow_stack
    api.wait_for_dag("train_pipeline")
    known = {r["dag_run_id"] for r in api.runs("train_pipeline")}

    page = browser.new_page()
    page.goto(f"{api.url}/dags/train_pipeline")
    _login(page, api)  # the UI sends a browser without a session to Airflow's login page
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    for title in ("Source table", "Data window start", "Epochs", "Processes per node", "Distributed strategy",
                  "Gate: minimum AUC"):
        expect(dialog.locator("label", has_text=title).first).to_be_visible()
    for name, value in FORM.items():
        dialog.locator(f'input[name="element_{name}"]').fill(value)
    dialog.screenshot(path=str(artifacts_dir / "1-trigger-form.png"))
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    dialog.wait_for(state="hidden")
    page.screenshot(path=str(artifacts_dir / "2-triggered.png"))

    deadline = time.monotonic() + 60
    new_runs: list[dict] = []
    while not new_runs and time.monotonic() < deadline:
        new_runs = [r for r in api.runs("train_pipeline") if r["dag_run_id"] not in known]
        time.sleep(2)
    assert new_runs, "the form did not create a DAG run"
    run_id = new_runs[0]["dag_run_id"]
    assert new_runs[0]["conf"]["window_start"] == FORM["window_start"]
    assert int(new_runs[0]["conf"]["epochs"]) == 1
    run = api.wait_for_run("train_pipeline", run_id, timeout=900)
    assert run["state"] == "success", api.explain("train_pipeline", run_id)
    versions = mlflow_client.search_model_versions(f"tags.`lineage.orchestration.run_id` = '{run_id}'")
    assert len(versions) == 1
    version = versions[0].version

    # The plugin's entry in the UI's navigation shows the model page inside the Airflow UI.
    page.get_by_role("link", name="Models").first.click()
    page.wait_for_url("**/plugin/mlops-models")
    frame = page.frame_locator("iframe").first
    frame.get_by_role("link", name="rainfall").click()
    row = frame.locator(f'tr[data-version="{version}"]')
    row.wait_for()
    lineage = frame.locator(f'details.lineage[data-version="{version}"]')
    if lineage.get_attribute("open") is None:
        lineage.locator("summary").click()
    text = lineage.inner_text()
    assert run_id in text and "1953-01-01" in text and "train_pipeline" in text
    for group in ("data", "code", "framework", "orchestration", "checkpoint"):
        assert lineage.locator(f'dl[data-group="{group}"]').count() == 1, f"lineage lacks {group}"
    page.screenshot(path=str(artifacts_dir / "3-model-page-in-airflow-ui.png"), full_page=True)

    # The page on its own, scrolled to the new version's lineage.
    page.goto(f"{api.url}/mlops/models/rainfall#v{version}")
    page.locator(f'details.lineage[data-version="{version}"]').wait_for()
    page.screenshot(path=str(artifacts_dir / "4-model-page-lineage.png"), full_page=True)
    page.close()


def test_model_page_draws_the_metric_per_version_and_the_monitoring_timeline(browser, airflow_stack, champion,
                                                                             monitored_window, artifacts_dir):
    api = airflow_stack
    page = browser.new_page()
    page.goto(f"{api.url}/mlops/models/rainfall")
    if page.locator('input[name="username"]').count():
        _login(page, api)
        page.goto(f"{api.url}/mlops/models/rainfall")
    plot = page.locator("svg.metric-plot")
    plot.wait_for()
    assert plot.locator("circle.version-point").count() >= 1
    timeline = page.locator("svg.timeline-plot")
    assert timeline.locator("rect.drift-bar").count() >= 1, "the monitored window is drawn"
    assert "vs champion" in page.locator("table.versions").inner_text() or "first model" in page.locator(
        "table.versions").inner_text()
    plot.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "5-model-page-plots.png"), full_page=True)
    timeline.screenshot(path=str(artifacts_dir / "6-monitoring-timeline.png"))
    plot.screenshot(path=str(artifacts_dir / "7-metric-per-version.png"))
    page.close()
