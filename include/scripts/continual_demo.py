"""The continual-learning story on the bundled rainfall data, run with the reference DAGs (dag.test).

Starting from the current champion, ``drift_monitor`` checks one quarter after another; when its damping
policy triggers, ``continual_learning`` fine-tunes the champion on the recent window and the gate decides.
Ends with a timeline table. Run by ``make demo`` after ``train_pipeline``:

    python include/scripts/continual_demo.py --start 1981-01-01 --quarters 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def quarters(start: str, count: int) -> list[tuple[str, str]]:
    d = dt.date.fromisoformat(start)
    out = []
    for _ in range(count):
        month = d.month + 3
        nxt = dt.date(d.year + (month - 1) // 12, (month - 1) % 12 + 1, 1)
        out.append((d.isoformat(), (nxt - dt.timedelta(days=1)).isoformat()))
        d = nxt
    return out


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py"))
    if bag.import_errors:
        raise SystemExit(f"{dag_id} has import errors: {bag.import_errors}")
    return bag.dags[dag_id]


def xcom(dr, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id=task_id,
                                                 key="return_value").one_or_none()
        return None if row is None else XComModel.deserialize_value(row)


def states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def champion(client, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        return None


def clear_policy_state(asset_uri: str) -> None:
    """Forget the policy state kept in the drift Asset's state store by an earlier demo."""
    from airflow.models.asset import AssetModel
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.utils.session import create_session

    with create_session() as session:
        for asset in session.query(AssetModel).filter_by(uri=asset_uri):
            session.query(AssetStateStoreModel).filter(AssetStateStoreModel.asset_id == asset.id,
                                                       AssetStateStoreModel.key.like("trigger_policy_state%")).delete(
                synchronize_session=False)


def fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="1981-01-01", help="first quarter to monitor")
    parser.add_argument("--quarters", type=int, default=10)
    parser.add_argument("--model", default="rainfall")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    from mlflow import MlflowClient

    conn = json.loads(os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    client = MlflowClient((conn.get("extra") or {}).get("tracking_uri") or conn.get("host"))
    if champion(client, args.model) is None:
        print("No champion yet: run train_pipeline first (make demo does).")
        return 1
    data_dir = os.environ.get("MLOPS_DATA_DIR", str(REPO / "data"))
    state_uri = f"{data_dir}/drift/demo_policy_state_{int(time.time())}.json"
    clear_policy_state(f"mlops://drift/{args.model}")  # the demo starts the policy afresh
    monitor, learner = load_dag("drift_monitor"), load_dag("continual_learning")
    rows = []
    for start, end in quarters(args.start, args.quarters):
        before = champion(client, args.model)
        t0 = time.monotonic()
        dr = monitor.test(run_conf={"window_start": start, "window_end": end, "state_uri": state_uri})
        st = states(dr)
        drift = xcom(dr, "detect_drift") or {}
        perf = xcom(dr, "monitor_performance") or {}
        decision = xcom(dr, "trigger_policy") or {}
        action = decision.get("action", "failed" if str(dr.state) != "success" else "none")
        outcome = ""
        if st.get("trigger_policy") == "success" and action in ("fine_tune", "retrain"):
            request = {k: decision[k] for k in ("action", "source_uri", "window_start", "window_end")}
            cl = learner.test(run_conf={**request, "epochs": args.epochs})
            reg = xcom(cl, "register") or {}
            promoted = states(cl).get("promote_production") == "success" or states(cl).get("promote") == "success"
            outcome = f"v{reg.get('version', '?')} {'promoted' if promoted else 'rejected by gate'}"
        after = champion(client, args.model)
        rows.append({
            "window": f"{start[:7]}..{end[:7]}",
            "drift_share": drift.get("drift_share"),
            "prediction_drift": drift.get("prediction_drift"),
            "auc": perf.get("value"),
            "drop": (decision.get("drop_test") or {}).get("drop"),
            "z": (decision.get("drop_test") or {}).get("z"),
            "verdict": (decision.get("drop_test") or {}).get("verdict", "-"),
            "signals": ",".join(decision.get("signals") or drift.get("signals") or []) or "-",
            "action": action + (f" -> {outcome}" if outcome else ""),
            "champion": f"v{before}" + (f" -> v{after}" if after != before else ""),
            "seconds": time.monotonic() - t0,
        })
        r = rows[-1]
        print(f"{r['window']}: drift share {fmt(r['drift_share'], '.2f')}, champion AUC {fmt(r['auc'])} "
              f"(drop {fmt(r['drop'])}, z {fmt(r['z'], '.1f')}: {r['verdict']}), {r['action']}, champion "
              f"{r['champion']}", flush=True)

    print()
    print("| window | drift share | prediction drift | champion AUC | AUC drop vs baseline | z | drop test "
          "| signals | action | champion |")
    print("|---|---:|---|---:|---:|---:|---|---|---|---|")
    for r in rows:
        print(f"| {r['window']} | {fmt(r['drift_share'], '.2f')} | {r['prediction_drift']} | {fmt(r['auc'])} | "
              f"{fmt(r['drop'])} | {fmt(r['z'], '.1f')} | {r['verdict']} | {r['signals']} | {r['action']} "
              f"| {r['champion']} |")
    print(f"\nPolicy state: the drift Asset's state store (key trigger_policy_state:<digest of the state file name>); outside Airflow {state_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
