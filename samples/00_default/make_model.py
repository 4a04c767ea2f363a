"""Regenerates tinynet.onnx, the bundled default model (needs the [torch] extra):

    .venv/bin/python samples/00_default/make_model.py

A small classifier with the units onnxscope freezes most often: Conv+BatchNorm, ReLU, max
pooling, a squeeze-excitation gate (Hardsigmoid), HardSwish and a residual sum. Its weights are
random (seed 0): it shows the mechanics, not a trained network.
"""

from __future__ import annotations

import os

import torch
from onnxscope.converters.pytorch import export
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


class TinyNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, 1, 1, groups=16),
            nn.BatchNorm2d(16),
            nn.Hardswish(),
            SqueezeExcite(16),
            nn.Conv2d(16, 16, 1),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(y + self.block(y))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


if __name__ == "__main__":
    torch.manual_seed(0)
    net = TinyNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    here = os.path.dirname(os.path.abspath(__file__))
    export(net, torch.randn(1, 3, 64, 64), os.path.join(here, "tinynet.onnx"))
