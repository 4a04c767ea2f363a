"""Architectures for benchmarks (no torchvision), built from the test suite's blocks
(samples/architectures/torch_models.py) so the two never drift apart: ResNet-18,
MobileNetV3-Small (its real layout: hardswish, squeeze-excite with hardsigmoid, depthwise convs),
a U-Net for image-to-image at 128², and a MobileNetV3-Large + LR-ASPP segmentation net at 256²."""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")
)
from architectures.torch_models import BasicBlock, InvertedResidual, TinyUNet  # noqa: E402


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


def inverted_residuals(layout, cin: int) -> list[nn.Module]:
    """MobileNetV3's blocks from a layout of (kernel, hidden, out, se, hardswish, stride)."""
    blocks = []
    for k, hidden, cout, se, hs, stride in layout:
        act = nn.Hardswish if hs else nn.ReLU
        blocks.append(InvertedResidual(cin, hidden, cout, k, stride, se=se, act=act))
        cin = cout
    return blocks


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small's layout (Howard et al. 2019, table 2): 3x3 stem, eleven inverted
    residual blocks (kernel, expansion, width, SE, activation, stride), 576-channel head."""

    LAYOUT = [  # (k, hidden, out, se, hardswish, stride)
        (3, 16, 16, True, False, 2),
        (3, 72, 24, False, False, 2),
        (3, 88, 24, False, False, 1),
        (5, 96, 40, True, True, 2),
        (5, 240, 40, True, True, 1),
        (5, 240, 40, True, True, 1),
        (5, 120, 48, True, True, 1),
        (5, 144, 48, True, True, 1),
        (5, 288, 96, True, True, 2),
        (5, 576, 96, True, True, 1),
        (5, 576, 96, True, True, 1),
    ]

    def __init__(self, classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, 16, 3, 2, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.Hardswish(),
        ]
        layers += inverted_residuals(self.LAYOUT, 16)
        cin = self.LAYOUT[-1][2]
        layers += [nn.Conv2d(cin, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Linear(1024, classes))

    def forward(self, x):
        y = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.head(torch.flatten(y, 1))


class MobileNetV3LRASPP(nn.Module):
    """A segmentation net of the deployed kind: the MobileNetV3-Large backbone (Howard et al.
    2019, table 1: hardswish, squeeze-excite gates, depthwise convs; the last stride-2 block at
    stride 1 for an output stride of 16) and an LR-ASPP head (section 6.4: a 1x1 conv branch
    gated by a sigmoid of its global pool, bilinear upsampling, a 1/8 skip), at 256²."""

    LAYOUT = [  # (k, hidden, out, se, hardswish, stride)
        (3, 16, 16, False, False, 1),
        (3, 64, 24, False, False, 2),
        (3, 72, 24, False, False, 1),
        (5, 72, 40, True, False, 2),
        (5, 120, 40, True, False, 1),
        (5, 120, 40, True, False, 1),  # -> the 1/8 skip
        (3, 240, 80, False, True, 2),
        (3, 200, 80, False, True, 1),
        (3, 184, 80, False, True, 1),
        (3, 184, 80, False, True, 1),
        (3, 480, 112, True, True, 1),
        (3, 672, 112, True, True, 1),
        (5, 672, 160, True, True, 1),  # stride 2 in the classifier; 1 for segmentation
        (5, 960, 160, True, True, 1),
        (5, 960, 160, True, True, 1),
    ]
    SKIP = 6  # blocks up to the 1/8 skip (with the stem)

    def __init__(self, classes: int = 21):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        ]
        layers += inverted_residuals(self.LAYOUT, 16)
        cin = self.LAYOUT[-1][2]
        layers.append(nn.Sequential(nn.Conv2d(cin, 960, 1, bias=False), nn.BatchNorm2d(960),
                                    nn.Hardswish()))  # fmt: skip
        self.low = nn.Sequential(*layers[: self.SKIP + 1])
        self.high = nn.Sequential(*layers[self.SKIP + 1 :])
        self.branch = nn.Sequential(nn.Conv2d(960, 128, 1, bias=False), nn.BatchNorm2d(128),
                                    nn.ReLU())  # fmt: skip
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(960, 128, 1), nn.Sigmoid())
        self.high_classes = nn.Conv2d(128, classes, 1)
        self.low_classes = nn.Conv2d(40, classes, 1)

    def forward(self, x):
        low = self.low(x)
        high = self.high(low)
        y = self.branch(high) * self.gate(high)
        up = nn.functional.interpolate
        y = up(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.high_classes(y) + self.low_classes(low)
        return up(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def calibrate(self, seed: int = 0) -> None:
        """Real-weights-like: torchvision's initialisation for MobileNetV3 (Kaiming normal,
        fan-out), BatchNorm scales around 1, and BatchNorm statistics measured on the
        activations of random images (as training leaves them), so every unit sees inputs in
        its working range instead of collapsing to one piece."""
        g = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                m.weight.data = torch.randn(m.weight.shape, generator=g) * (2 / fan_out) ** 0.5
                if m.bias is not None:
                    m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data = 0.5 + torch.rand(m.num_features, generator=g)
                m.bias.data = 0.2 * torch.randn(m.num_features, generator=g)
                m.momentum = None  # a cumulative average over the calibration batches
                m.reset_running_stats()
        self.train()
        with torch.no_grad():
            for _ in range(4):
                self(torch.randn(4, 3, 256, 256, generator=g))
        self.eval()


def unet(width: int = 32) -> nn.Module:
    """The test suite's U-Net (MaxPool, strided conv, ConvTranspose, bilinear and nearest
    upsampling, skips) at a benchmark width, RGB in and out."""
    return TinyUNet(cin=3, cout=3, w=width)


# name -> (constructor, input size, kind)
BENCH_NETS = {
    "resnet18": (ResNet18, 224, "classifier"),
    "mobilenetv3": (MobileNetV3Small, 224, "classifier"),
    "unet128": (unet, 128, "image"),
    "lraspp256": (MobileNetV3LRASPP, 256, "image"),
}


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic weights and non-trivial BatchNorm statistics (a net that calibrates
    itself, `calibrate`, does so instead)."""
    if hasattr(module, "calibrate"):
        module.calibrate(seed)
        return module.eval()
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
