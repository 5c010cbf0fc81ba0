"""continual_learning: on a drift Asset event, fine-tune the champion (or retrain from scratch), evaluate, promote."""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.lifecycle import continual_learning_dag
from airflow_mlops.spec import load_pipeline

PROJECT = Path(__file__).resolve().parents[1]
RAINFALL = load_pipeline(PROJECT / "include" / "pipelines" / "rainfall.json", PROJECT)

DOC = """
### continual_learning

Runs on every drift Asset event from `drift_monitor` (or by hand with the Params form).

1. **resolve_request**: the action (`fine_tune` or `retrain`) and the window from the event; the champion's
   version and checkpoint from the registry.
2. **prepare_window**: the recent windows to learn from (the event's window and `recent_span` days before it), with a
   deterministic holdout for evaluation; **plan_training** sizes the training to its compute budget
   (`plan_fine_tune`: `fine_tune_cost` of a retrain's samples) from the rows there are, mixes in a seeded sample of
   older rows and puts the window's newest rows aside for early stopping.
3. **validate**, then **train**: a fine-tune starts from the champion's checkpoint (stateful); a retrain starts
   from scratch (stateless: schema change, too many fine-tunes in a row). The plan's epochs are a maximum: training
   stops when the loss on the newest rows stops improving (`patience`), and the best epoch is registered.
4. **evaluate** against the champion on the same holdout, **register** with lineage (a fine-tune records its parent
   version), **promote_staging** / **promote_production**: the gate moves `staging`, then `production` and
   `champion`, only when the new version is not worse (the same aliases as `train_pipeline`).
"""

dag = continual_learning_dag(RAINFALL, dag_id="continual_learning", doc=DOC)
