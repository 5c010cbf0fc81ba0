"""Gives Airflow a user of MLflow's basic-auth app of its own, not an admin, with the password of docker/.env."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request

API = "/api/2.0/mlflow"


class Refused(RuntimeError):
    """MLflow answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def _call(url: str, auth: tuple[str, str], method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            text = resp.read().decode() or "{}"
            return json.loads(text)
    except urllib.error.HTTPError as exc:
        raise Refused(exc.code, exc.read().decode(errors="replace")) from None


def _wait(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def ensure_user(base: str, admin: tuple[str, str], user: tuple[str, str]) -> str:
    """Create ``user`` (or reset its password and admin flag); returns what was done. Idempotent."""
    if user[0] == admin[0]:
        raise ValueError(f"MLFLOW_AIRFLOW_USER is {user[0]!r}, the admin's name: expected a user of its own; "
                         "set MLFLOW_AIRFLOW_USER in docker/.env to another name (default airflow)")
    try:
        found = _call(f"{base}{API}/users/get?username={urllib.request.quote(user[0])}", admin)["user"]
    except Refused as exc:
        if exc.status == 401:
            raise PermissionError(
                f"MLflow refused the admin {admin[0]!r}: MLFLOW_ADMIN_PASSWORD in docker/.env is not the "
                "password MLflow's user store holds (the admin is created once, on the first start). Set it back, "
                "or change it through MLflow's users/update-password API and then in docker/.env") from None
        if exc.status != 404:
            raise
        _call(f"{base}{API}/users/create", admin, "POST", {"username": user[0], "password": user[1]})
        action = "created"
    else:
        _call(f"{base}{API}/users/update-password", admin, "PATCH", {"username": user[0], "password": user[1]})
        if found.get("is_admin"):
            _call(f"{base}{API}/users/update-admin", admin, "PATCH", {"username": user[0], "is_admin": False})
        action = "updated"
    # Signs in with its own password, and is no admin.
    me = _call(f"{base}{API}/users/get?username={urllib.request.quote(user[0])}", user)["user"]
    if me.get("is_admin"):
        raise RuntimeError(f"MLflow user {user[0]!r} is still an admin")
    return action


def main() -> int:
    env = os.environ
    base = env["MLFLOW_TRACKING_URI"].rstrip("/")
    _wait(base, float(env.get("MLFLOW_USERS_WAIT_S", "120")))
    try:
        action = ensure_user(base, (env["MLFLOW_ADMIN_USER"], env["MLFLOW_ADMIN_PASSWORD"]),
                             (env["MLFLOW_AIRFLOW_USER"], env["MLFLOW_AIRFLOW_PASSWORD"]))
    except (ValueError, PermissionError) as exc:
        print(f"mlflow-init: {exc}", file=sys.stderr)
        return 1
    print(f"MLflow user {env['MLFLOW_AIRFLOW_USER']!r} {action}: Airflow's, not an admin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
