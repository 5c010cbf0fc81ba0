"""A one-task training DAG for fault tests: the operator trains with the config JSON named by MLOPS_FAULT_CONFIG."""

from __future__ import annotations

import json
import os

from airflow.sdk import DAG

from airflow_mlops.operators.training import DistributedTrainingOperator

with open(os.environ["MLOPS_FAULT_CONFIG"], encoding="utf-8") as fh:
    CFG = json.load(fh)
DATA = CFG["dataset"]

with DAG("fault_training", schedule=None, catchup=False) as dag:
    DistributedTrainingOperator(
        task_id="train", train_uri=DATA["train_uri"], eval_uri=DATA["eval_uri"], target_column=DATA["target_column"],
        feature_columns=DATA["feature_columns"], epochs=CFG["epochs"], batch_size=CFG["batch_size"],
        learning_rate=CFG["learning_rate"], seed=CFG["seed"], nproc_per_node=CFG["nproc_per_node"],
        model_kwargs=CFG["model_kwargs"], checkpoint_dir=CFG["checkpoint_dir"], checkpoint_policy=CFG["checkpoint"],
        training_options={"log_every_n_steps": CFG["log_every_n_steps"]},
        allowed_root="/",  # the fault tests' data lie in their own temporary folders
    )
