"""MLflow model from code: the registered model's ``python_function`` flavour (rebuilt from weights, no pickle)."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class TaskModel(PythonModel):
    """Returns what the model's task gives per row: probability (binary), class and class probabilities
    (multiclass), value (regression)."""

    def load_context(self, context: Any) -> None:
        from airflow_mlops.registry.packaging import WEIGHTS_ARTIFACT, read_package

        self.model, self.meta = read_package(context.artifacts[WEIGHTS_ARTIFACT])

    # No type hints on predict: MLflow would infer a signature from them; the logged one comes from real output.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        import pandas as pd

        from airflow_mlops.registry.packaging import predict_frame

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input,
                                                                                        columns=self.meta.features)
        return predict_frame(self.model, self.meta, frame)


mlflow.models.set_model(TaskModel())
