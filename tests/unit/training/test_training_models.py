"""The built-in tabular MLP and model factories given as ``module:function``."""

from __future__ import annotations

import pytest
import torch

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.training.models import build_model, resolve_factory, tabular_mlp


def test_tabular_mlp_shapes_and_standardization():
    model = tabular_mlp(3, hidden_sizes=(4,), out_features=2, dropout=0.1, feature_mean=[1, 2, 3],
                        feature_std=[1, 0, 2])
    out = model(torch.zeros(5, 3))
    assert out.shape == (5, 2)
    assert torch.equal(model[0].std, torch.tensor([1.0, 1.0, 2.0]))  # constant column left unscaled
    assert "0.mean" in model.state_dict()


def test_build_model_from_spec():
    model = build_model({"factory": "airflow_mlops.training.models:tabular_mlp", "kwargs": {"in_features": 2}})
    assert model(torch.zeros(1, 2)).shape == (1, 1)


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("no_such_module_xyz:f", "Cannot import"),
        ("airflow_mlops.training.models:nope", "not found"),
        ("airflow_mlops.training.models:DEFAULT", "not found"),
        ("airflow_mlops", "import path"),
    ],
)
def test_resolve_factory_errors(path, needle):
    with pytest.raises(MlopsConfigurationError, match=needle):
        resolve_factory(path, allowed=["no_such_module_xyz:f"])


def test_factory_must_return_a_module(tmp_path, monkeypatch):
    (tmp_path / "plain_factory_mod.py").write_text("def not_a_module():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MlopsConfigurationError, match="no module"):
        build_model({"factory": "plain_factory_mod:not_a_module", "kwargs": {}}, allowed=["plain_factory_mod:*"])
