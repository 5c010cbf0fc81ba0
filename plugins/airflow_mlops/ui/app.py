"""The FastAPI app mounted by the Airflow API server under ``/mlops``: model page (HTML) and its JSON API."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from airflow_mlops.ui import pages
from airflow_mlops.ui.auth import UserDep, current_user, login_url
from airflow_mlops.ui.views import model_summary, version_view, window_view

log = logging.getLogger(__name__)

URL_PREFIX = "/mlops"
#: The MLflow connection the page reads; the same one the DAGs use unless told otherwise.
CONN_ID_ENV = "MLOPS_UI_MLFLOW_CONN_ID"
MAX_VERSIONS = 200
MAX_WINDOWS = 200


class Registry:
    """What the page reads from MLflow, through the project's hook and registry service."""

    def __init__(self, conn_id: str) -> None:
        from airflow_mlops.hooks.mlflow import MlflowHook
        from airflow_mlops.registry.service import RegistryService

        self.hook = MlflowHook(mlflow_conn_id=conn_id)
        self.service = RegistryService(self.hook.client)

    @property
    def client(self) -> Any:
        return self.service.client

    def names(self) -> list[str]:
        from airflow_mlops.registry.lock import is_lock_model

        return sorted(m.name for m in self.client.search_registered_models(max_results=1000)
                      if not is_lock_model(m.name))

    def model(self, name: str) -> dict[str, Any]:
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(name)
        except MlflowException as exc:
            raise HTTPException(status_code=status.HTTP_404_NOT_FOUND,
                                detail=f"registered model {name!r} not found") from exc
        escaped = name.replace("'", "\\'")
        versions = self.client.search_model_versions(f"name = '{escaped}'", max_results=MAX_VERSIONS)
        return model_summary(model, list(versions), self.history(name))

    def version(self, name: str, version: str) -> dict[str, Any]:
        from mlflow.exceptions import MlflowException

        try:
            return version_view(self.client.get_model_version(name, version))
        except MlflowException as exc:
            raise HTTPException(status_code=status.HTTP_404_NOT_FOUND,
                                detail=f"version {version!r} of {name!r} not found") from exc

    def history(self, name: str) -> list[dict[str, Any]]:
        return self.service.alias_history(name)

    def monitoring(self, name: str, limit: int = MAX_WINDOWS) -> list[dict[str, Any]]:
        """The monitored windows of a model, oldest first: drift share, the champion's metric, the action."""
        from airflow_mlops.registry import tags as keys

        experiment = self.client.get_experiment_by_name(keys.monitoring_experiment(name))
        if experiment is None:
            return []
        runs = self.client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                                       max_results=limit)
        return [window_view(run) for run in reversed(runs)]

    def version_url(self, name: str, version: str) -> str | None:
        from airflow_mlops.operators.links import mlflow_ui_base, model_version_url

        return model_version_url(mlflow_ui_base(self.hook.settings), name, version)


def get_registry() -> Registry:
    try:
        return Registry(os.environ.get(CONN_ID_ENV, "mlflow_default"))
    except Exception as exc:  # a missing or broken connection: say so instead of a bare 500
        log.warning("MLflow registry unavailable for the model page: %s", exc)
        raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=f"MLflow registry unavailable: {exc}") from exc


RegistryDep = Annotated[Registry, Depends(get_registry)]


def _base(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


#: Sent with every response of the /mlops app: no foreign scripts, frames or sniffing; the page uses only
#: its own inline style and data: images.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'self'",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def create_app() -> FastAPI:
    app = FastAPI(title="airflow-mlops models", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    # --- JSON API: every route requires a logged-in user --------------------------------------------------

    @app.get("/api/models")
    def list_models(user: UserDep, reg: RegistryDep) -> dict[str, Any]:
        return {"models": [reg.model(n) for n in reg.names()]}

    @app.get("/api/models/{name}")
    def get_model(name: str, user: UserDep, reg: RegistryDep) -> dict[str, Any]:
        return {**reg.model(name), "alias_history": reg.history(name), "monitoring": reg.monitoring(name)}

    @app.get("/api/models/{name}/versions/{version}")
    def get_version(name: str, version: str, user: UserDep, reg: RegistryDep) -> dict[str, Any]:
        return {"name": name, **reg.version(name, version)}

    # --- HTML pages: without a valid login, back to Airflow's login page ---------------------------------------

    async def page_user(request: Request) -> Any:
        from fastapi.security import HTTPBearer

        try:
            return await current_user(request, await HTTPBearer(auto_error=False)(request))
        except HTTPException as exc:
            if exc.status_code == status.HTTP_401_UNAUTHORIZED or exc.detail == "Invalid JWT token":
                return RedirectResponse(login_url(request), status_code=status.HTTP_303_SEE_OTHER)
            raise

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Any:
        user = await page_user(request)
        if isinstance(user, RedirectResponse):
            return user
        from starlette.concurrency import run_in_threadpool

        def render() -> str:
            reg = get_registry()
            return pages.index_page([reg.model(n) for n in reg.names()], _base(request))

        return HTMLResponse(await run_in_threadpool(render))

    @app.get("/models/{name}", response_class=HTMLResponse)
    async def model(request: Request, name: str) -> Any:
        user = await page_user(request)
        if isinstance(user, RedirectResponse):
            return user
        from starlette.concurrency import run_in_threadpool

        def render() -> str:
            reg = get_registry()
            return pages.model_page(reg.model(name), reg.history(name), _base(request), reg.version_url,
                                    reg.monitoring(name))

        return HTMLResponse(await run_in_threadpool(render))

    return app


app = create_app()
