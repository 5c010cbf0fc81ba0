"""batch_inference: score a window of new data with models:/rainfall@production, recording the version used."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, chain

from airflow_mlops.operators.data import PrepareWindowOperator
from airflow_mlops.operators.inference import BatchInferenceOperator
from airflow_mlops.reference.rainfall import (
    DATA_DIR,
    FEATURES,
    MODEL_NAME,
    PREDICTIONS_ASSET,
    PRODUCTION_ASSET,
    SOURCE_URI,
)

DOC = """
### batch_inference

Scores a window of the data with the model that holds the `production` alias and writes predictions with the
model version that made them (`model_version` column). Runs whenever `production` moves (Asset schedule:
promotion or rollback) and on demand with a Params form.
"""

with DAG(
    dag_id="batch_inference",
    description="Score new data with models:/rainfall@production",
    schedule=[PRODUCTION_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["mlops", "inference"],
    params={
        "source_uri": Param(SOURCE_URI, type="string", title="Source table"),
        "window_start": Param("1959-01-01", type="string", format="date", title="First day to score"),
        "window_end": Param("1959-03-31", type="string", format="date", title="Last day to score"),
        "alias": Param("production", type="string", enum=["production", "staging", "champion"], title="Alias"),
    },
) as dag:
    batch = PrepareWindowOperator(
        task_id="prepare_batch",
        source_uri="{{ params.source_uri }}",
        time_column="date",
        key_column="day",
        start="{{ params.window_start }}",
        end="{{ params.window_end }}",
        holdout_fraction=0.0,
        min_rows=1,
        output_dir=f"{DATA_DIR}/inference/{{{{ run_id | replace(':', '_') | replace('+', '_') }}}}",
        multiple_outputs=True,
    )
    score = BatchInferenceOperator(
        task_id="score",
        model_name=MODEL_NAME,
        alias="{{ params.alias }}",
        input_uri=batch.output["train_uri"],
        output_uri=f"{DATA_DIR}/predictions/{{{{ run_id | replace(':', '_') | replace('+', '_') }}}}/predictions.csv",
        feature_columns=FEATURES,
        passthrough_columns=["day", "date"],
        outlets=[PREDICTIONS_ASSET],
    )

    chain(batch, score)
