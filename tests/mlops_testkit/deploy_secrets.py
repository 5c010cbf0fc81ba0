"""Secrets for docker/.env generated as docker/.env.example says: what the deployment tests start from."""

from __future__ import annotations

from pathlib import Path

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "docker" / ".env.example"


def example_env() -> dict[str, str]:
    """docker/.env.example as an operator who copied it without editing would run it."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def good_env() -> dict[str, str]:
    """Values generated as docker/.env.example says (fresh random ones, each different)."""
    import secrets

    from cryptography.fernet import Fernet

    return {
        "POSTGRES_PASSWORD": secrets.token_hex(16), "AIRFLOW_DB_PASSWORD": secrets.token_hex(16),
        "MLFLOW_DB_PASSWORD": secrets.token_hex(16), "S3_ROOT_USER": f"s3root-{secrets.token_hex(6)}",
        "S3_ROOT_PASSWORD": secrets.token_hex(16), "S3_ACCESS_KEY": f"mlops-{secrets.token_hex(6)}",
        "S3_SECRET_KEY": secrets.token_hex(16), "MLFLOW_ADMIN_PASSWORD": secrets.token_hex(16),
        "MLFLOW_AIRFLOW_PASSWORD": secrets.token_hex(16),
        "MLFLOW_FLASK_SECRET_KEY": secrets.token_hex(32), "REDIS_PASSWORD": secrets.token_hex(16),
        "AIRFLOW_JWT_SECRET": secrets.token_hex(32), "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
    }
