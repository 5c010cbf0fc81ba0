"""model_rollback: put an alias of the rainfall model back on its previous version in one step."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_mlops.operators.registry import RollbackModelOperator
from airflow_mlops.reference.rainfall import MODEL_NAME, PRODUCTION_ASSET

DOC = """
### model_rollback

Restores the previous version of an alias (default `production`, and `champion` with it) from the recorded
alias history, or a version given in the form. The move is recorded with its reason and emits the alias's
Asset event, so `batch_inference` and deployments pick the restored version up.
"""

with DAG(
    dag_id="model_rollback",
    description="Roll an alias of the rainfall model back to its previous version",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["mlops", "registry"],
    params={
        "alias": Param("production", type="string", enum=["production", "staging"], title="Alias"),
        "to_version": Param(None, type=["null", "string"], title="Version to restore",
                            description="Empty: the version the alias held before its current one."),
        "reason": Param("manual rollback", type="string", minLength=3, title="Reason"),
    },
) as dag:
    RollbackModelOperator(
        task_id="rollback",
        model_name=MODEL_NAME,
        alias="{{ params.alias }}",
        to_version="{{ params.to_version or '' }}",
        also_aliases=["champion"],
        reason="{{ params.reason }}",
        outlets=[PRODUCTION_ASSET],
    )
