"""include/scripts/preflight.py: the deployment refuses missing, placeholder, short and reused secrets."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops_testkit.deploy_secrets import example_env, good_env

REPO = Path(__file__).resolve().parents[2]
PREFLIGHT = REPO / "include" / "scripts" / "preflight.py"

_spec = importlib.util.spec_from_file_location("mlops_preflight", PREFLIGHT)
preflight = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = preflight
_spec.loader.exec_module(preflight)


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PREFLIGHT)], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=60)


def test_the_example_jwt_secret_forges_an_admin_token_and_preflight_refuses_it():
    """The attack: anyone who read docker/.env.example signs a token Airflow's API accepts as an admin's."""
    import jwt
    from airflow.api_fastapi.auth.tokens import JWTValidator

    published = example_env()["AIRFLOW_JWT_SECRET"]
    now = int(time.time())
    forged = jwt.encode({"sub": "admin", "role": "ADMIN", "aud": "apache-airflow", "iat": now, "nbf": now,
                         "exp": now + 3600}, published, algorithm="HS512")
    validator = JWTValidator(secret_key=published, audience="apache-airflow", issuer=None, algorithm=["HS512"],
                             leeway=0)
    assert validator.validated_claims(forged)["sub"] == "admin"  # an unedited copy would accept it

    proc = _run(example_env())
    assert proc.returncode == 1
    assert "Refusing to start the deployment" in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "AIRFLOW_JWT_SECRET" in x)
    assert "publicly known placeholder" in line and "forges an admin's token" in line
    assert "openssl rand -hex 32" in line
    assert published not in proc.stderr  # never echoes a value


def test_every_placeholder_of_the_example_is_refused_by_name():
    found = preflight.problems(example_env())
    for name in preflight.SECRETS:
        assert any(p.startswith(f"{name} ") for p in found), f"{name} accepted from .env.example"
    # Each message says what to do: set it in docker/.env to a generated value.
    assert all("docker/.env" in p for p in found)


def test_good_secrets_are_accepted():
    proc = _run(good_env())
    assert proc.returncode == 0, proc.stderr
    assert f"{len(preflight.SECRETS)} secrets set" in proc.stdout


@pytest.mark.parametrize(("name", "value", "says"), [
    ("REDIS_PASSWORD", None, "is not set"),
    ("REDIS_PASSWORD", "   ", "is not set"),
    ("POSTGRES_PASSWORD", "change-me-postgres", "publicly known placeholder"),
    ("S3_ROOT_USER", "minioadmin", "publicly known placeholder"),
    ("S3_ROOT_PASSWORD", "minioadmin", "publicly known placeholder"),
    ("MLFLOW_ADMIN_PASSWORD", "password", "publicly known placeholder"),
    ("AIRFLOW_DB_PASSWORD", "Sh0rt-pw", "has 8 characters, fewer than 16"),
    ("AIRFLOW_JWT_SECRET", "0123456789abcdef0123456789abcde", "fewer than 32"),
    ("MLFLOW_DB_PASSWORD", "abcdefgh12345678@postgres", "characters other than"),
    ("S3_SECRET_KEY", "a" * 40, "repeats too few characters"),
    ("AIRFLOW_FERNET_KEY", "0123456789abcdef0123456789abcdef0123456789ab", "not a Fernet key"),
])
def test_each_bad_secret_is_refused_with_what_to_do(name, value, says):
    env = good_env()
    if value is None:
        del env[name]
    else:
        env[name] = value
    found = preflight.problems(env)
    assert len(found) == 1, found
    assert found[0].startswith(f"{name} ") and says in found[0]
    assert preflight.SECRETS[name].generate in found[0]
    if value and value.strip():
        assert value not in found[0]


def test_the_application_account_must_not_be_the_s3_root_account():
    env = good_env()
    env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"] = env["S3_ROOT_USER"], env["S3_ROOT_PASSWORD"]
    found = preflight.problems(env)
    assert [p.split(" ")[0] for p in found] == ["S3_ACCESS_KEY", "S3_SECRET_KEY"]
    assert all("S3 root account" in p for p in found)


def test_the_topology_checks_the_secrets_preflight_knows():
    spec = importlib.util.spec_from_file_location("mlops_topology_preflight",
                                                  REPO / "include" / "scripts" / "topology.py")
    topology = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = topology
    spec.loader.exec_module(topology)
    assert set(topology.SECRETS_CHECKED) == set(preflight.SECRETS)
