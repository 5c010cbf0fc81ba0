"""scaling_train: N independent training tasks from one data window, for the worker-count scaling benchmark."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_mlops.operators.data import PrepareWindowOperator
from airflow_mlops.operators.training import DistributedTrainingOperator

with DAG(
    dag_id="scaling_train",
    description="N independent torchrun trainings (one per seed): how the wall time falls with more workers",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,
    tags=["mlops", "benchmark"],
    params={
        "source_uri": Param(type="string", title="Source table"),
        "window_start": Param("1950-01-01", type="string", format="date"),
        "window_end": Param("1959-12-31", type="string", format="date"),
        "features": Param(type="array", title="Feature columns"),
        "target": Param(type="string", title="Label column"),
        "runs": Param(4, type="integer", minimum=1, title="Independent trainings"),
        "epochs": Param(2, type="integer", minimum=1),
        "batch_size": Param(8, type="integer", minimum=1),
        "processes": Param(1, type="integer", minimum=1),
        "checkpoint_base": Param(type="string", title="Root of the trainings' checkpoint folders"),
    },
) as dag:
    window = PrepareWindowOperator(
        task_id="prepare_window",
        source_uri="{{ params.source_uri }}",
        time_column="date",
        key_column="day",
        start="{{ params.window_start }}",
        end="{{ params.window_end }}",
        holdout_fraction=0.2,
        multiple_outputs=True,
    )

    @task
    def seeds(params: dict) -> list[int]:
        return list(range(int(params["runs"])))

    DistributedTrainingOperator.partial(
        task_id="train",
        train_uri=window.output["train_uri"],
        eval_uri=window.output["holdout_uri"],
        target_column="{{ params.target }}",
        feature_columns="{{ params.features }}",
        epochs="{{ params.epochs }}",
        batch_size="{{ params.batch_size }}",
        nproc_per_node="{{ params.processes }}",
        model_kwargs={"in_features": "{{ params.features | length }}", "hidden_sizes": [64, 32]},
        checkpoint_base="{{ params.checkpoint_base }}",
    ).expand(seed=seeds())
