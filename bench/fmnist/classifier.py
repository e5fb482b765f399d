"""A small Fashion-MNIST CNN whose penultimate layer is the feature space of the cheap Fréchet distance.

Two 3x3 conv pairs (32 and 64 channels) with max-pooling, then a 128-unit layer (the features)
and a 10-way linear head. Inputs are [B, 1, 28, 28] images in [-1, 1]; 32x32 (padded) inputs are
centre-cropped.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_state_strict, read_checkpoint

FORMAT = "fmnist-classifier"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "fmnist_classifier.safetensors"


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture; stored as JSON in the weight file."""

    channels: tuple[int, int] = (32, 64)  # conv channels at 28x28 and 14x14
    feature_dim: int = 128  # width of the penultimate layer used for the Fréchet distance
    num_classes: int = 10
    dropout: float = 0.3  # on the features, training only

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"ClassifierConfig: unknown keys {unknown}; valid keys are {sorted(cls.__dataclass_fields__)}"
            )
        data = dict(data)
        if "channels" in data:
            data["channels"] = tuple(data["channels"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"channels": list(self.channels)}


def _conv_pair(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class FashionClassifier(nn.Module):
    """logits = head(features(x)); ``features`` [B, feature_dim], ``probs`` [B, num_classes]."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ClassifierConfig()
        c1, c2 = config.channels
        self.body = nn.Sequential(
            _conv_pair(1, c1), _conv_pair(c1, c2), nn.Flatten(), nn.Linear(c2 * 49, config.feature_dim)
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    @staticmethod
    def _crop(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (32, 32):
            return x[..., 2:30, 2:30]
        if x.shape[1:] != (1, 28, 28):
            raise ValueError(f"expected images [B, 1, 28, 28] (or 32x32 padded), got {tuple(x.shape)}")
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [B, feature_dim] (after ReLU) of images x [B, 1, 28, 28] in [-1, 1]."""
        weight = self.head.weight
        return torch.relu(self.body(self._crop(x).to(weight.dtype, copy=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, num_classes]."""
        return torch.softmax(self.forward(x), dim=-1)


def load_classifier(path: str | os.PathLike[str] = DEFAULT_WEIGHTS) -> FashionClassifier:
    """The classifier stored at ``path`` (safetensors only), in eval mode with gradients off."""
    state, config, info = read_checkpoint(path, FORMAT)
    model = FashionClassifier(ClassifierConfig.from_dict(config))
    load_state_strict(model, state, path)
    model.info = info
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on images [N, 1, 28, 28] with labels [N]."""
    correct = sum(
        (model(images[i : i + batch]).argmax(-1) == labels[i : i + batch]).sum().item()
        for i in range(0, len(images), batch)
    )
    return correct / len(images)
