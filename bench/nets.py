"""Architectures for benchmarks (no torchvision): ResNet-18 at any input size, built from the
test suite's basic block (tests/torch_models.py) so the two never drift apart."""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)
from torch_models import BasicBlock  # noqa: E402


class ResNet18(nn.Module):
    """The ResNet-18 layout: 7x7 stem, max pool, four stages of two basic blocks, linear head."""

    def __init__(self, classes: int = 1000, width: int = 64):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(3, w[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks, cin = [], w[0]
        for i, cout in enumerate(w):
            blocks += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        y = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic weights and non-trivial BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return module.eval()


def export_with_free_batch(net: nn.Module, x, path: str) -> str:
    """Legacy export at opset 17 with a free batch dimension (plain runs at any batch size)."""
    torch.onnx.export(
        net,
        (torch.from_numpy(x),),
        path,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
    )
    return path
