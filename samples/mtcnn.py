"""MTCNN's PNet and ONet (Zhang et al. 2016), written here so that the pretrained state dicts that
facenet-pytorch ships (samples/subjects.py: pnet, onet) load into them and export to ONNX.

    python samples/mtcnn.py onet OUT.onnx     # fetch onet.pt, load, export (legacy exporter)

Only the architectures are defined here; the weights are fetched, never committed.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import subjects  # noqa: E402


class PNet(nn.Module):
    """Proposal net, fully convolutional (12x12 receptive field): face probability and box maps."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / non-face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box regression

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops: face probability, box regression and five landmarks."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)  # face / non-face
        self.dense6_2 = nn.Linear(256, 4)  # box regression
        self.dense6_3 = nn.Linear(256, 10)  # landmarks

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        # the weights were converted from Caffe, whose flattening order is (W, H, C)
        x = x.permute(0, 3, 2, 1).contiguous().flatten(1)
        x = self.prelu5(self.dense5(x))
        return torch.softmax(self.dense6_1(x), dim=1), self.dense6_2(x), self.dense6_3(x)


NETS = {
    "pnet": (PNet, (1, 3, 48, 48), ["prob", "box"]),
    "onet": (ONet, (1, 3, 48, 48), ["prob", "box", "landmarks"]),
}


def pretrained(name: str) -> nn.Module:
    """The net with its fetched pretrained weights (strict: every tensor must fit)."""
    cls = NETS[name][0]
    net = cls()
    state = torch.load(subjects.fetch(name), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def export(name: str, path: str) -> str:
    cls, shape, outputs = NETS[name]
    net = pretrained(name)
    with torch.no_grad():
        torch.onnx.export(
            net,
            (torch.zeros(shape),),
            path,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=outputs,
        )
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in NETS:
        print("usage: mtcnn.py pnet|onet OUT.onnx", file=sys.stderr)
        sys.exit(2)
    print(export(sys.argv[1], sys.argv[2]))
