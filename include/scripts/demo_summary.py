"""Print what `make demo` produced: the champion model version, its metrics and lineage, and where to look."""

from __future__ import annotations

import json
import os
import sys


def main(model_name: str = "rainfall") -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from airflow_mlops.lineage import TAG_PREFIX
    from airflow_mlops.registry import tags

    conn = json.loads(os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    tracking_uri = (conn.get("extra") or {}).get("tracking_uri") or conn.get("host")
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        mv = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        print(f"No version of {model_name!r} holds the alias 'champion': the demo did not promote a model.")
        print("See the task logs above (or .airflow/demo.log) for the failing step.")
        return 1
    model = client.get_registered_model(model_name)
    print()
    print("=" * 78)
    print(f"Model        : {model_name}")
    print(f"Version      : {mv.version}   aliases: {', '.join(sorted(model.aliases)) or '-'}")
    print(f"  champion   -> version {model.aliases.get('champion')}")
    metrics = tags.metrics_from_tags(mv.tags)
    print(f"Task         : {mv.tags.get(tags.TASK, '-')}")
    print("Metrics      : " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k != "rows"))
    print(f"Gate         : {mv.tags.get(tags.REASON, '-')}")
    print("Lineage      :")
    for key in sorted(mv.tags):
        if key.startswith(TAG_PREFIX) and key != f"{TAG_PREFIX}data.schema":
            print(f"  {key[len(TAG_PREFIX):]:<28} {mv.tags[key][:90]}")
    print(f"MLflow run   : {mv.run_id}")
    print(f"Tracking URI : {tracking_uri}")
    print("Look in MLflow: make up (UI on http://127.0.0.1:5000), Models > "
          f"{model_name} > Version {mv.version}; or in Python:")
    print(f"  MlflowClient('{tracking_uri}').get_model_version_by_alias('{model_name}', 'champion')")
    print("=" * 78)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
