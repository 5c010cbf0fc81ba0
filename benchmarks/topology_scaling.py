"""Worker-count scaling on the production topology: N independent trainings on 1 worker, then on 2.

Starts the native topology (include/scripts/topology.py: PostgreSQL, Redis, S3, MLflow server, Airflow with
CeleryExecutor), with the benchmark DAG benchmarks/dags/scaling_train.py as a second DAG bundle and one task
slot per worker, so that the worker count is the only thing that changes. Needs postgresql and redis-server.

    python benchmarks/topology_scaling.py --runs 4        # writes benchmarks/results/topology_scaling.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "include" / "datasets"))


def _topology_module():
    spec = importlib.util.spec_from_file_location("mlops_topology", REPO / "include" / "scripts" / "topology.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="independent trainings per measurement")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="measurements per worker count (median)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "topology_scaling.json")
    args = parser.parse_args()

    from build_rainfall import FEATURES, TARGET

    from mlops_testkit.airflow_api import AirflowApi

    topology = _topology_module()
    bundles = [
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
        {"name": "benchmarks", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(HERE / "dags")}},
    ]
    extra = {
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        # One slot per worker: the worker count is what changes between the two measurements.
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
    }
    home = Path(tempfile.mkdtemp(prefix="mlops-scaling-"))
    topo = topology.Topology(topology.TopologyConfig(home=home, workers=2, extra_env=extra))
    started = time.monotonic()
    topo.up(timeout=600)
    print(f"topology up in {time.monotonic() - started:.0f}s", flush=True)
    try:
        api = AirflowApi(url=topo.api_url, password=topo.admin_password(),
                         log_homes=[topo.cfg.worker_home(w) for w in topo.cfg.worker_names()])
        api.wait_for_dag("scaling_train")
        api.unpause("scaling_train")
        data = f"s3://{topo.values['DATA_BUCKET']}/data"
        conf = {"source_uri": f"{data}/rainfall/rainfall.parquet", "features": FEATURES, "target": TARGET,
                "runs": args.runs, "epochs": args.epochs, "checkpoint_base": f"{data}/scaling-checkpoints"}

        def measure(workers: int) -> dict:
            walls, hosts = [], set()
            for _ in range(args.repeats):
                t0 = time.monotonic()
                run_id, _ = api.run_and_wait("scaling_train", conf, timeout=1800)
                walls.append(time.monotonic() - t0)
                tis = api.task_instances("scaling_train", run_id)
                hosts |= {ti["hostname"] for ti in tis if ti["task_id"] == "train"}
            walls.sort()
            print(f"{workers} worker(s): {walls} s on {sorted(hosts)}", flush=True)
            return {"workers": workers, "wall_s": [round(w, 1) for w in walls],
                    "median_s": round(statistics.median(walls), 1), "train_hosts": sorted(hosts)}

        # Warm-up: parse, imports and the first window cut are not what is measured.
        api.run_and_wait("scaling_train", {**conf, "runs": 1, "epochs": 1}, timeout=900)
        topo.stop("worker-2")
        one = measure(1)
        topo.start_worker("worker-2")
        two = measure(2)
    finally:
        topo.destroy()
    result = {
        "measured": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "host": f"{platform.node()} ({os.cpu_count()} cores)",
        "dag": "scaling_train", "independent_trainings": args.runs, "epochs": args.epochs,
        "slots_per_worker": 1, "one_worker": one, "two_workers": two,
        "speedup_1_to_2": round(one["median_s"] / two["median_s"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
