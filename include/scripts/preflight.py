"""Refuses to start the deployment while a secret is missing, a known placeholder, too short or reused."""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from dataclasses import dataclass

#: Characters a secret may hold: it is written into URLs (database, broker) and INI files unescaped.
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
#: Values that are public knowledge: the example file's, the components' own defaults, common words.
KNOWN_VALUES = frozenset({
    "admin", "administrator", "airflow", "mlflow", "postgres", "redis", "minio", "minioadmin", "root",
    "password", "passw0rd", "secret", "changeme", "change_me", "default", "example", "test", "temp",
    "letmein", "qwerty", "123456", "12345678", "mlops", "s3", "key", "token",
})
PLACEHOLDER = re.compile(r"change[-_ ]?me|replace[-_ ]?me|your[-_]|placeholder|<.*>", re.IGNORECASE)


@dataclass(frozen=True)
class Secret:
    """One secret of docker/.env: how long it must be and how to make a good one."""

    #: what an attacker does with a known value
    guards: str
    min_length: int = 16
    generate: str = "openssl rand -hex 24"
    #: a Fernet key (32 url-safe base64 bytes), not a free-form string
    fernet: bool = False


GENERATE_FERNET = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'

#: Every secret the deployment needs, by its docker/.env name.
SECRETS: dict[str, Secret] = {
    "POSTGRES_PASSWORD": Secret("the PostgreSQL superuser: every database"),
    "AIRFLOW_DB_PASSWORD": Secret("Airflow's metadata database: every connection, variable and DAG run"),
    "MLFLOW_DB_PASSWORD": Secret("MLflow's tracking and registry database"),
    "S3_ROOT_USER": Secret("the S3 store's root account (with S3_ROOT_PASSWORD)", min_length=8,
                           generate="echo s3root-$(openssl rand -hex 6)"),
    "S3_ROOT_PASSWORD": Secret("the S3 store's root account: every bucket, user and policy"),
    "S3_ACCESS_KEY": Secret("the application's S3 key (with S3_SECRET_KEY)", min_length=8,
                            generate="echo mlops-$(openssl rand -hex 6)"),
    "S3_SECRET_KEY": Secret("the application's buckets: data, checkpoints, model artifacts"),
    "MLFLOW_ADMIN_PASSWORD": Secret("MLflow's admin account: every experiment, registered model and user"),
    "MLFLOW_AIRFLOW_PASSWORD": Secret("Airflow's MLflow account: its experiments and registered models"),
    "MLFLOW_FLASK_SECRET_KEY": Secret("MLflow's session and CSRF signatures", min_length=32,
                                      generate="openssl rand -hex 32"),
    "REDIS_PASSWORD": Secret("the Celery broker: whoever reaches it queues tasks on the workers"),
    "AIRFLOW_JWT_SECRET": Secret("Airflow's API tokens: anyone who knows it forges an admin's token",
                                 min_length=32, generate="openssl rand -hex 32"),
    "AIRFLOW_FERNET_KEY": Secret("the encryption of connection passwords and variables in the database",
                                 min_length=44, generate=GENERATE_FERNET, fernet=True),
}
#: Pairs that must differ: an application's account is not the administrator's.
DISTINCT = (("S3_ACCESS_KEY", "S3_ROOT_USER", "the S3 root account"),
            ("S3_SECRET_KEY", "S3_ROOT_PASSWORD", "the S3 root account"),
            ("MLFLOW_AIRFLOW_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLflow's admin account"))


def _is_fernet(value: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(value.encode())) == 32
    except (binascii.Error, ValueError):
        return False


def problem(name: str, value: str | None) -> str | None:
    """What is wrong with one secret's value, or None; the message never contains the value."""
    spec = SECRETS[name]
    fix = f"set {name} in docker/.env to a fresh random value, e.g. `{spec.generate}`"
    if value is None or not value.strip():
        return f"{name} is not set ({spec.guards}); {fix}"
    if PLACEHOLDER.search(value) or value.lower() in KNOWN_VALUES:
        return (f"{name} is a publicly known placeholder ({spec.guards}; anyone who read docker/.env.example "
                f"or the component's documentation knows it); {fix}")
    if spec.fernet:
        if not _is_fernet(value):
            return f"{name} is not a Fernet key (32 url-safe base64-encoded bytes, {spec.guards}); {fix}"
        return None
    if len(value) < spec.min_length:
        return f"{name} has {len(value)} characters, fewer than {spec.min_length} ({spec.guards}); {fix}"
    if not URL_SAFE.match(value):
        return (f"{name} holds characters other than letters, digits and . _ ~ - (it goes into URLs and "
                f"configuration files unescaped); {fix}")
    if len(set(value)) < 6:
        return f"{name} repeats too few characters to be random ({spec.guards}); {fix}"
    return None


def problems(values: dict[str, str | None]) -> list[str]:
    """Every problem of the secrets in ``values`` (docker/.env names), in SECRETS order."""
    out = [p for name in SECRETS if (p := problem(name, values.get(name)))]
    for app, root, what in DISTINCT:
        if values.get(app) and values.get(app) == values.get(root):
            out.append(f"{app} equals {root}: the application would hold {what}; give the application an "
                       f"account of its own (`{SECRETS[app].generate}`)")
    return out


def main(argv: list[str] | None = None) -> int:
    found = problems(dict(os.environ))
    if found:
        print("Refusing to start the deployment: fix these secrets in docker/.env, then start again.",
              file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        return 1
    print(f"preflight: {len(SECRETS)} secrets set, none a placeholder")
    return 0


if __name__ == "__main__":
    sys.exit(main())
