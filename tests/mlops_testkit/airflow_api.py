"""The Airflow REST API (v2) as a logged-in admin, with the waits end-to-end tests need."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = {"success", "failed"}


@dataclass
class AirflowApi:
    """Requests as ``admin``; ``log_homes`` are the AIRFLOW_HOMEs whose logs/ explain a failed run."""

    url: str
    password: str
    log_homes: list[Path] = field(default_factory=list)
    token: str = ""

    def login(self) -> str:
        import requests

        resp = requests.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password},
                             timeout=30)
        resp.raise_for_status()
        self.token = resp.json()["access_token"]
        return self.token

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        headers = {"Authorization": f"Bearer {self.token or self.login()}"}
        resp = requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)
        if resp.status_code == 401:  # token expired during a long wait
            headers["Authorization"] = f"Bearer {self.login()}"
            resp = requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> dict:
        """Until the DAG processor has parsed the file and the API knows the DAG."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.request("GET", f"/api/v2/dags/{dag_id}")
            except requests.HTTPError:
                time.sleep(2)
        errors = self.request("GET", "/api/v2/importErrors")
        raise AssertionError(f"{dag_id} not parsed after {timeout}s; import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": True})

    def settle(self, dag_ids: tuple[str, ...], timeout: float = 900, quiet_s: float = 10) -> None:
        """Wait until none of ``dag_ids`` has a queued or running run (and none starts for ``quiet_s``): an
        unpaused scheduled DAG's own run, and what its Asset events trigger, finish before a test looks."""
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            busy = [r["dag_run_id"] for d in dag_ids for r in self.runs(d) if r["state"] in ("queued", "running")]
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            time.sleep(3)
        raise AssertionError(f"runs of {dag_ids} still active after {timeout}s")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in TERMINAL:
                return run
            time.sleep(2)
        raise AssertionError(f"{dag_id} {run_id} not finished after {timeout}s:\n{self.explain(dag_id, run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict]:
        """Every try of a task, the current one included (hostname, state, start and end of each)."""
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")[
            "task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                             f"{key}", params={"deserialize": True})
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value

    def log_files(self, dag_id: str, run_id: str, task_id: str) -> Iterable[Path]:
        for home in self.log_homes:
            yield from sorted((home / "logs").glob(f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/*"))

    def explain(self, dag_id: str, run_id: str) -> str:
        """Task states and the log tails of the run's unfinished or failed tasks, for an assertion message."""
        states = self.task_states(dag_id, run_id)
        lines = [json.dumps(states, indent=1)]
        for task_id, state in states.items():
            if state not in ("success", "skipped"):
                for log in self.log_files(dag_id, run_id, task_id):
                    lines.append(f"--- {log} of {task_id} ({state})\n{log.read_text(errors='replace')[-2500:]}")
        return "\n".join(lines)

    def run_and_wait(self, dag_id: str, conf: dict[str, Any], timeout: float = 900) -> tuple[str, dict]:
        run_id = self.trigger(dag_id, conf)
        run = self.wait_for_run(dag_id, run_id, timeout)
        assert run["state"] == "success", self.explain(dag_id, run_id)
        return run_id, run
