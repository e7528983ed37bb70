"""A small two-layer CNN for the 8x8 digits (or any task with an image shape)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit.models.base import Classifier


class CNN(Classifier):
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, config: Any) -> None:
        super().__init__()
        c, h, w = image_shape
        norm = (lambda n: nn.BatchNorm2d(n)) if config.norm == "batch" else (lambda n: nn.Identity())
        self.image_shape = image_shape
        self.conv = nn.Sequential(
            nn.Conv2d(c, config.channels, 3, padding=1),
            norm(config.channels),
            nn.ReLU(),
            nn.Conv2d(config.channels, 2 * config.channels, 3, padding=1),
            norm(2 * config.channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * config.channels * (h // 2) * (w // 2), config.width), nn.ReLU()
        )
        self.head = nn.Linear(config.width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x.reshape(-1, *self.image_shape)))


def build(config: Any, info: Any) -> CNN:
    if info.image_shape is None:
        raise ValueError("cnn needs a task with an image shape (the digits tasks)")
    return CNN(info.image_shape, info.num_classes, config)
