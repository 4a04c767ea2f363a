"""Small PyTorch architectures, defined here (no torchvision, nothing downloads), for end-to-end
tests of onnxscope on exported models.

Each builder returns `(module, x)`: a module in eval mode with seeded weights, and a float32 input.
Widths are kept small so that exporting, interpreting and checking every model takes seconds.
BatchNorm running statistics and every affine parameter of a normalization layer are set to
non-trivial values, so that no normalization is an identity (and so that BN folding into Conv,
which both torch exporters do, is actually exercised).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SEED = 1234

# Module types that are not piecewise linear: a model meant to have A_x = its Jacobian (the
# PIECEWISE lists of the model suites) must contain none of them.
SMOOTH_MODULES = (
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.ELU,
    nn.SELU,
    nn.Softplus,
    nn.Mish,
    nn.InstanceNorm2d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Softmax,
    nn.MultiheadAttention,
)


# -- initialization --------------------------------------------------------------------------------
def init_weights(module: nn.Module, seed: int = SEED) -> nn.Module:
    """Seeded, variance-preserving weights, non-zero biases and non-trivial norm statistics."""
    g = torch.Generator().manual_seed(seed)

    def randn(t, scale=1.0, shift=0.0):
        return torch.randn(t.shape, generator=g, dtype=t.dtype) * scale + shift

    def rand(t, lo, hi):
        return torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                w = m.weight
                if isinstance(m, nn.ConvTranspose2d):
                    # fan-in of a transposed conv: the input channels that reach one output
                    fan_in = w.shape[0] * w[0, 0].numel() / (m.stride[0] * m.stride[1])
                    fan_in = fan_in / m.groups
                else:
                    fan_in = w[0].numel()
                w.copy_(randn(w, (2.0 / max(fan_in, 1.0)) ** 0.5))
                if m.bias is not None:
                    m.bias.copy_(randn(m.bias, 0.1))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(rand(m.weight, 0.5, 1.5))
                m.bias.copy_(randn(m.bias, 0.2))
                m.running_mean.copy_(randn(m.running_mean, 0.3))
                m.running_var.copy_(rand(m.running_var, 0.5, 2.0))
            elif isinstance(m, (nn.InstanceNorm2d, nn.LayerNorm, nn.GroupNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(rand(m.weight, 0.5, 1.5))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(randn(m.bias, 0.2))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(rand(m.weight, 0.05, 0.4))
    return module


def make_input(shape, seed: int = SEED + 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32)


# -- (a) ResNet --------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class TinyResNet(nn.Module):
    """ResNet-18 in miniature: 7x7/2 stem, BN, ReLU, MaxPool(3,2,1), basic blocks, GAP, Linear."""

    def __init__(self, width: int = 8, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(
            BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


# -- (b) MobileNetV3 ---------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    """AdaptiveAvgPool -> 1x1 conv -> ReLU -> 1x1 conv -> Hardsigmoid -> multiply."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))
        return x * s


class InvertedResidual(nn.Module):
    def __init__(self, cin, hidden, cout, k, stride, se: bool, act: type[nn.Module]):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        layers += [
            nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            act(),
        ]
        if se:
            layers.append(SqueezeExcite(hidden, max(hidden // 4, 4)))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class TinyMobileNetV3(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        hs, re = nn.Hardswish, nn.ReLU
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False),
            nn.BatchNorm2d(8),
            nn.Hardswish(),
            InvertedResidual(8, 8, 8, 3, 2, se=True, act=re),
            InvertedResidual(8, 24, 12, 3, 1, se=False, act=re),
            InvertedResidual(12, 36, 12, 3, 1, se=False, act=re),
            InvertedResidual(12, 48, 16, 5, 2, se=True, act=hs),
            InvertedResidual(16, 48, 16, 5, 1, se=True, act=hs),
            nn.Conv2d(16, 48, 1, bias=False),
            nn.BatchNorm2d(48),
            nn.Hardswish(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(48, 32), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(32, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# -- (c) U-Net ---------------------------------------------------------------------------------
def _double_conv(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """Encoder with MaxPool and a strided conv; decoder with ConvTranspose, nn.Upsample (bilinear,
    nearest) and F.interpolate (bilinear, align_corners=True); torch.cat skips."""

    def __init__(self, cin: int = 3, cout: int = 2, w: int = 6):
        super().__init__()
        self.enc1 = _double_conv(cin, w)
        self.down1 = nn.MaxPool2d(2)
        self.enc2 = _double_conv(w, 2 * w)
        self.down2 = nn.Conv2d(2 * w, 2 * w, 3, 2, 1)  # strided-conv downsampling
        self.enc3 = _double_conv(2 * w, 4 * w)
        self.down3 = nn.MaxPool2d(2)
        self.bottom = _double_conv(4 * w, 4 * w)
        self.up3 = nn.ConvTranspose2d(4 * w, 4 * w, 2, 2)
        self.dec3 = _double_conv(8 * w, 2 * w)
        self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec2 = _double_conv(4 * w, w)
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec1 = _double_conv(2 * w, w)
        self.head = nn.Conv2d(w, cout, 1)
        self.side = nn.Conv2d(4 * w, cout, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.down1(e1))
        e3 = self.enc3(self.down2(e2))
        b = self.bottom(self.down3(e3))
        d3 = self.dec3(torch.cat([self.up3(b), e3], dim=1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        # a deep-supervision side branch brought back to full size by F.interpolate
        side = F.interpolate(self.side(b), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.head(d1) + side


# -- (d) CycleGAN generator --------------------------------------------------------------------
class ResnetBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3),
            nn.InstanceNorm2d(c, affine=True),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3),
            nn.InstanceNorm2d(c, affine=True),
        )

    def forward(self, x):
        return x + self.block(x)


class TinyCycleGANGenerator(nn.Module):
    def __init__(self, c: int = 3, ngf: int = 8, n_blocks: int = 2):
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(c, ngf, 7),
            nn.InstanceNorm2d(ngf, affine=True),
            nn.ReLU(True),
        ]
        for i in range(2):
            m = 2**i
            layers += [
                nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1),
                nn.InstanceNorm2d(ngf * m * 2, affine=True),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            m = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, output_padding=1),
                nn.InstanceNorm2d(ngf * m // 2, affine=True),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, c, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


# -- (e) ConvNeXt ------------------------------------------------------------------------------
class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> permute NHWC -> LayerNorm -> Linear 4x -> GELU -> Linear -> layer scale ->
    permute NCHW -> residual."""

    def __init__(self, dim: int, layer_scale: float = 0.5):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)
        return x + y


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor (ConvNeXt's channels_first norm)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self, dims=(16, 32), num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))
        self.stage1 = nn.Sequential(ConvNeXtBlock(dims[0]), ConvNeXtBlock(dims[0]))
        self.down = nn.Sequential(LayerNorm2d(dims[0], eps=1e-6), nn.Conv2d(dims[0], dims[1], 2, 2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(dims[1]))
        self.norm = nn.LayerNorm(dims[1], eps=1e-6)
        self.head = nn.Linear(dims[1], num_classes)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean(dim=(-2, -1))))


# -- (f) LeakyReLU / PReLU / MaxPool net -------------------------------------------------------
class LeakyPReLUNet(nn.Module):
    """Piecewise linear throughout, so A_x is the Jacobian at x."""

    def __init__(self, num_out: int = 6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, 1, 1),
            nn.BatchNorm2d(12),
            nn.PReLU(12),
            nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(12, 16, 3, 1, 1),
            nn.PReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        self.fc1 = nn.Linear(16 * 4 * 4, 24)
        self.act = nn.LeakyReLU(0.2)
        self.fc2 = nn.Linear(24, num_out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(torch.flatten(self.features(x), 1))))


# -- (g) EfficientNet-style MBConv with SiLU ---------------------------------------------------
class SiLUSqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(s))))


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, stride):
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
            SiLUSqueezeExcite(hidden, max(cin // 4, 2)),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class TinyEfficientNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU()
        )
        self.blocks = nn.Sequential(MBConv(8, 8, 1, 1), MBConv(8, 12, 4, 2), MBConv(12, 12, 4, 1))
        self.head = nn.Sequential(nn.Conv2d(12, 32, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# -- registry ----------------------------------------------------------------------------------
# name: (constructor, input shape, piecewise linear (A_x is the Jacobian at x))
ARCHITECTURES = {
    "resnet": (TinyResNet, (1, 3, 32, 32), True),
    "mobilenetv3": (TinyMobileNetV3, (1, 3, 32, 32), False),
    "unet": (TinyUNet, (1, 3, 32, 32), True),
    "cyclegan": (TinyCycleGANGenerator, (1, 3, 32, 32), False),
    "convnext": (TinyConvNeXt, (1, 3, 32, 32), False),
    "leaky_prelu": (LeakyPReLUNet, (1, 3, 28, 28), True),
    "efficientnet": (TinyEfficientNet, (1, 3, 32, 32), False),
}


def build(name: str, seed: int = SEED) -> tuple[nn.Module, torch.Tensor]:
    """The named architecture with seeded weights, in eval mode, and its seeded example input."""
    ctor, shape, _ = ARCHITECTURES[name]
    torch.manual_seed(seed)
    module = init_weights(ctor(), seed).eval()
    return module, make_input(shape, seed + 1)


# -- an independent reference interpreter, in torch --------------------------------------------
# The paper's LinearScope, written against torch rather than ONNX: run a batch [x, z_1 … z_K, 0]
# through the module with every nonlinear unit replaced by the affine map frozen at x (element 0 of
# the batch), following DESIGN.md §2: ReLU-type gains, MaxPool selections taken at x, secant gains
# (f(u) − f(0))/u for smooth units, gates (Sigmoid, Hardsigmoid) frozen to their value at x, and
# normalizations that keep their centering but freeze 1/σ. Then F̂_x(z_k) is row k, c_x the last
# row, and A_x z_k = F̂_x(z_k) − c_x. Nothing here is shared with onnxscope.
import math  # noqa: E402

from torch.overrides import TorchFunctionMode  # noqa: E402


def _relu(u, inplace=False):
    return (u[:1] > 0).to(u.dtype) * u


def _leaky_relu(u, negative_slope=0.01, inplace=False):
    return torch.where(u[:1] > 0, 1.0, negative_slope).to(u.dtype) * u


def _prelu(u, weight):
    w = weight.reshape(1, -1, *([1] * (u.dim() - 2))) if weight.numel() > 1 else weight.reshape(())
    return torch.where(u[:1] > 0, torch.ones_like(u[:1]), w) * u


def _max_pool2d(
    u, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    assert not return_indices
    _, idx = F.max_pool2d_with_indices(u[:1], kernel_size, stride, padding, dilation, ceil_mode)
    b, c = u.shape[:2]
    flat = idx.flatten(2).expand(b, -1, -1)
    return u.flatten(2).gather(2, flat).reshape(b, *idx.shape[1:])


def _hardswish(u, inplace=False):
    return F.hardsigmoid(u[:1]) * u  # secant of hardswish through (0, 0)


def _silu(u, inplace=False):
    return torch.sigmoid(u[:1]) * u  # secant of x·σ(x): the gate σ frozen


def _gelu(u, approximate="none"):
    assert approximate == "none"
    return 0.5 * (1 + torch.erf(u[:1] / math.sqrt(2))) * u  # x·Φ(x): the gate Φ frozen


def _tanh(u):
    u0 = u[:1]
    safe = torch.where(u0.abs() < 1e-12, torch.ones_like(u0), u0)
    return torch.where(u0.abs() < 1e-12, torch.ones_like(u0), torch.tanh(safe) / safe) * u


def _gate(fn):
    def frozen(u, *args, **kwargs):
        kwargs.pop("inplace", None)
        return fn(u[:1], *args, **kwargs).expand_as(u)

    return frozen


def _instance_norm(
    u,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
):
    assert use_input_stats
    dims = tuple(range(2, u.dim()))
    var0 = u[:1].var(dim=dims, unbiased=False, keepdim=True)
    y = (u - u.mean(dim=dims, keepdim=True)) / torch.sqrt(var0 + eps)
    shape = (1, -1, *([1] * len(dims)))
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _layer_norm(u, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(u.dim() - len(normalized_shape), u.dim()))
    var0 = u[:1].var(dim=dims, unbiased=False, keepdim=True)
    y = (u - u.mean(dim=dims, keepdim=True)) / torch.sqrt(var0 + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


_FROZEN_RULES = {
    F.relu: _relu,
    torch.relu: _relu,
    F.leaky_relu: _leaky_relu,
    torch.prelu: _prelu,
    F.max_pool2d: _max_pool2d,
    F.hardswish: _hardswish,
    F.silu: _silu,
    F.gelu: _gelu,
    torch.tanh: _tanh,
    F.hardsigmoid: _gate(F.hardsigmoid),
    torch.sigmoid: _gate(torch.sigmoid),
    F.instance_norm: _instance_norm,
    F.layer_norm: _layer_norm,
}
# anything else that is not affine must not slip through unfrozen
_REFUSED = {
    torch.erf,
    F.softmax,
    F.elu,
    F.softplus,
    F.mish,
    torch.exp,
    torch.sqrt,
    F.relu6,
    F.hardtanh,
    torch.max,
    torch.amax,
    F.max_pool1d,
    F.max_pool3d,
    F.group_norm,
}


def _sigmoid_secant(u):
    u0 = u[:1]
    safe = torch.where(u0.abs() < 1e-12, torch.ones_like(u0), u0)
    near = u0.abs() < 1e-12
    gain = torch.where(near, torch.full_like(u0, 0.25), (torch.sigmoid(safe) - 0.5) / safe)
    return gain * u + 0.5


class _FreezeAtFirst(TorchFunctionMode):
    """torch.sigmoid is a gate (frozen to its value at x) when called from functional code, as in
    squeeze-excitation; inside an nn.Sigmoid module it is a unit of its own, with a secant gain."""

    def __init__(self):
        super().__init__()
        self.hits: dict[str, int] = {}
        self.in_sigmoid_module = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _REFUSED:
            raise NotImplementedError(f"reference interpreter: no frozen rule for {func}")
        rule = _FROZEN_RULES.get(func)
        if func is torch.sigmoid and self.in_sigmoid_module:
            rule = _sigmoid_secant
        if rule is None:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        self.hits[name] = self.hits.get(name, 0) + 1
        return rule(*args, **kwargs)


def _frozen_forward(module: nn.Module, x: torch.Tensor, z: torch.Tensor, dtype, grad: bool):
    """Run [x, z_1 … z_K, 0] through a `dtype` copy of the module with every unit frozen at x.
    Returns (F(x), A_x z (K, *F.shape), c_x, hits, the probe batch fed in)."""
    import copy

    ref = copy.deepcopy(module).to(dtype).eval()
    k = z.shape[0]
    probes = z.reshape(k * x.shape[0], *x.shape[1:]).to(dtype)
    if grad:
        probes = probes.detach().requires_grad_(True)
    batch = torch.cat([x.to(dtype), probes, torch.zeros_like(x, dtype=dtype)])
    mode = _FreezeAtFirst()

    def enter(*_):
        mode.in_sigmoid_module += 1

    def leave(*_):
        mode.in_sigmoid_module -= 1

    for m in ref.modules():
        if isinstance(m, nn.Sigmoid):
            m.register_forward_pre_hook(enter)
            m.register_forward_hook(leave)
    with torch.set_grad_enabled(grad), mode:
        out = ref(batch)
    n = x.shape[0]
    assert n == 1, "element 0 of the batch carries the decisions"
    f, az, c = out[:n], out[n:-n], out[-n:]
    return f, (az - c).reshape(k, *f.shape), c, mode.hits, probes


def reference_interpreter(module: nn.Module, x: torch.Tensor, z: torch.Tensor, dtype=torch.float64):
    """(F(x), A_x z, c_x, hits) from the torch reference; z is (K, *x.shape). Computed in `dtype`
    on a copy of the module, so the reference is independent of ONNX float32 rounding."""
    f, az, c, hits, _ = _frozen_forward(module, x, z, dtype, grad=False)
    return f, az, c, hits


def reference_adjoint(
    module: nn.Module, x: torch.Tensor, w: torch.Tensor, dtype=torch.float64
) -> torch.Tensor:
    """A_x^T w_k for every cotangent w_k (w is (K, *F(x).shape)), from the torch reference: the
    gradient of Σ_k <A_x z_k, w_k> with respect to the probes z. The frozen network is affine in
    z (every decision and gate is read off row x, which does not depend on z), so this gradient is
    exactly the transposed interpreter, for smooth units (secant gains, frozen gates) as well."""
    k = w.shape[0]
    z = torch.zeros(k, *x.shape, dtype=dtype)
    _, az, _, _, probes = _frozen_forward(module, x, z, dtype, grad=True)
    (grad,) = torch.autograd.grad((az * w.to(dtype)).sum(), probes)
    return grad.reshape(k, *x.shape).detach()


# -- a segmentation-style sigmoid head (a smooth unit with f(0) ≠ 0) ---------------------------
class SigmoidHead(nn.Module):
    """A 1x1 conv read-out (identity weights, zero bias) followed by nn.Sigmoid: the per-pixel
    probability head of a segmenter, reduced so that A_x is the diagonal of secant gains."""

    def __init__(self, channels: int = 2):
        super().__init__()
        self.readout = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():
            self.readout.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
            self.readout.bias.zero_()
        self.act = nn.Sigmoid()

    def forward(self, x):
        return self.act(self.readout(x))


def small_logits_input(channels: int = 2, side: int = 4) -> torch.Tensor:
    """Logits of both signs spanning 1e-4 … 1: the range where a probability head is undecided."""
    mags = torch.logspace(-3.8, 0, channels * side * side // 2, dtype=torch.float64)
    vals = torch.stack([mags, -mags], 1).reshape(-1)
    return vals.reshape(1, channels, side, side).to(torch.float32)


# -- comparisons with torch autograd (shared by the model tests and the zoo) ---------------------
def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def rel_each(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Relative error of each leading-axis slice."""
    k = len(want)
    got, want = got.reshape(k, -1).astype(np.float64), want.reshape(k, -1).astype(np.float64)
    return np.linalg.norm(got - want, axis=1) / np.maximum(np.linalg.norm(want, axis=1), 1e-300)


def one_hot(idx, shape) -> np.ndarray:
    """e_i for each flat index i, each shaped `shape`."""
    out = np.zeros((len(idx), int(np.prod(shape))), np.float32)
    out[np.arange(len(idx)), idx] = 1
    return out.reshape(len(idx), *shape)


def jvp(fn, x: torch.Tensor, tangents: np.ndarray) -> np.ndarray:
    """torch.func.jvp(fn, x, t) for every tangent t (shaped like x); modules in eval mode."""
    outs = []
    for t in tangents:
        _, dy = torch.func.jvp(fn, (x,), (torch.from_numpy(np.ascontiguousarray(t)),))
        outs.append(dy.detach().numpy())
    return np.stack(outs)


def vjp(fn, x: torch.Tensor, cotangents: np.ndarray) -> np.ndarray:
    """torch.func.vjp(fn, x)[1](w) for every cotangent w (shaped like fn(x)): one linearization
    at x, then one pullback per cotangent."""
    _, pullback = torch.func.vjp(fn, x)
    outs = []
    for w in cotangents:
        (dx,) = pullback(torch.from_numpy(np.ascontiguousarray(w)))
        outs.append(dx.detach().numpy())
    return np.stack(outs)


def parametrized_cases(all_cases, known_bugs, test: str, names, exporters, wildcard=True):
    """pytest params (architecture, exporter) for one test, with a strict xfail where
    `known_bugs` has (test, name, exporter) — or ("*", name, exporter) when `wildcard`."""
    import pytest

    out = []
    for name, exporter in all_cases:
        if (names is not None and name not in names) or exporter not in exporters:
            continue
        reason = known_bugs.get((test, name, exporter))
        if reason is None and wildcard:
            reason = known_bugs.get(("*", name, exporter))
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(name, exporter, marks=marks, id=f"{name}-{exporter}"))
    return out


def assert_matches(out: np.ndarray, want: np.ndarray, tol: float) -> None:
    """Same shape and dtype, and equal to `tol` relative to the largest reference value."""
    assert out.shape == want.shape and out.dtype == want.dtype, (out.shape, want.shape)
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * float(np.abs(want).max()))


def plain_output(path: str, feeds: dict) -> np.ndarray:
    """The single output of a plain ONNX Runtime run of the exported model."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, feeds)
    return y


def assert_each_exact(got: np.ndarray, want: np.ndarray, label: str, tol: float = 1e-5) -> None:
    """Every slice along the leading axis equal to the reference to `tol` (relative); prints
    the largest error under `label` (visible with pytest -s)."""
    errs = rel_each(got, want)
    print(f"{label}: {errs.max():.2e} over {len(errs)}")
    assert errs.max() <= tol, errs
