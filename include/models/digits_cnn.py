"""A small convolutional network for the 8x8 digits: rows of 64 pixels in, one logit per class out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.training.models import Standardize


class DigitsCNN(nn.Module):
    """[standardize] -> (N, 64) as (N, 1, 8, 8) -> conv, ReLU, pool -> conv, ReLU, pool -> linear logits."""

    def __init__(self, side: int, out_features: int, channels: int, scale: nn.Module | None) -> None:
        super().__init__()
        self.side = side
        self.scale = scale if scale is not None else nn.Identity()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.head = nn.Linear(2 * channels * (side // 4) ** 2, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale(x).reshape(x.shape[0], 1, self.side, self.side)
        return self.head(torch.flatten(self.features(x), start_dim=1))


def digits_cnn(
    in_features: int = 64,
    out_features: int = 10,
    channels: int = 16,
    feature_mean: Sequence[float] | None = None,
    feature_std: Sequence[float] | None = None,
) -> nn.Module:
    """The digits CNN; ``in_features`` must be a square of a side divisible by 4 (64 = 8x8)."""
    side = round(in_features**0.5)
    if side * side != in_features or side % 4 or out_features < 1 or channels < 1:
        raise MlopsConfigurationError(
            explain("digits_cnn cannot take these sizes",
                    expected="in_features a square of a side divisible by 4, out_features >= 1, channels >= 1",
                    received={"in_features": in_features, "out_features": out_features, "channels": channels})
        )
    scale = Standardize(feature_mean, feature_std) if feature_mean is not None and feature_std is not None else None
    return DigitsCNN(side, int(out_features), int(channels), scale)
