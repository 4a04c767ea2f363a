"""The conformance zoo: small PyTorch architectures, defined here (no torchvision, nothing
downloads), that cover the building blocks of classic vision networks beside the ones in
samples/architectures/torch_models.py (ResNet, MobileNetV3, U-Net, CycleGAN, ConvNeXt,
EfficientNet, LeakyReLU/PReLU), so that onnxscope is checked on what both torch exporters make of
each of them.

Each architecture is small (widths of 8-32 channels, 16x16 to 48x48 inputs): the point is
correctness, not size. `build(name)` returns `(module, x, others)`: the module in eval mode with
seeded weights (torch_models' `init_weights`: non-trivial BatchNorm statistics and norm
affine parameters), the seeded float32 input x that onnxscope interprets, and any other model
input by name (FFDNet's noise-level map), which is held fixed. `export(module, x, others, path,
exporter, dynamic)` writes the ONNX model, with the other inputs as further graph inputs and the
axes of x that the architecture's `dynamic` names free (vit_dynamic: batch, height, width);
`reference_interpreter` / `reference_adjoint` rebuild the frozen network in torch (float64) as an
independent check.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")
)
from architectures import torch_models as tm  # noqa: E402

SEED = tm.SEED


# -- shared blocks -----------------------------------------------------------------------------
def conv_bn_relu(cin, cout, k=3, stride=1, groups=1, act: type[nn.Module] = nn.ReLU):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        act(),
    )


# -- VGG ---------------------------------------------------------------------------------------
class TinyVGG(nn.Module):
    """VGG-11 layout in miniature: conv-BN-ReLU stacks, MaxPool(2) after each stage, flatten,
    Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear."""

    def __init__(self, cfg=(8, "M", 16, "M", 24, 24, "M", 32, 32, "M"), num_classes=10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, 1, 1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 2 * 2, 48),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(48, 48),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(48, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# -- DenseNet ----------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 (bottleneck 4k) - BN-ReLU-Conv3x3 (k), concatenated to the input: the
    pre-activation BN follows a concat, so it cannot be folded into a Conv by the exporter."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth),
            nn.ReLU(),
            nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2)
        )


class TinyDenseNet(nn.Module):
    def __init__(self, growth=6, layers=(3, 3), num_classes=10):
        super().__init__()
        c = 2 * growth
        mods: list[nn.Module] = [nn.Conv2d(3, c, 3, 1, 1, bias=False)]
        for i, n in enumerate(layers):
            for _ in range(n):
                mods.append(DenseLayer(c, growth))
                c += growth
            if i < len(layers) - 1:
                mods.append(Transition(c, c // 2))
                c //= 2
        mods += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*mods)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# -- MobileNetV2 -------------------------------------------------------------------------------
class InvertedResidualV2(nn.Module):
    """[1x1 expand-BN-ReLU6] - dw3x3-BN-ReLU6 - 1x1 project-BN (linear bottleneck), residual."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu(cin, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class TinyMobileNetV2(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        # (expand, cout, repeats, stride)
        settings = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2)]
        layers: list[nn.Module] = [conv_bn_relu(3, 8, 3, 2, act=nn.ReLU6)]
        cin = 8
        for t, c, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidualV2(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu(cin, 48, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(48, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


# -- ShuffleNetV2 ------------------------------------------------------------------------------
def channel_shuffle(x, groups: int):
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits the channels (chunk) and transforms one half; stride 2
    transforms the whole input in two branches; then concat and channel shuffle."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(),
            )
        src = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            nn.Conv2d(src, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], 1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        return channel_shuffle(out, 2)


class TinyShuffleNetV2(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, 8, 3, 2), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(
            ShuffleUnit(8, 16, 2),
            ShuffleUnit(16, 16, 1),
            ShuffleUnit(16, 16, 1),
            ShuffleUnit(16, 32, 2),
            ShuffleUnit(32, 32, 1),
        )
        self.head = conv_bn_relu(32, 48, 1)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        return self.fc(self.head(self.stages(self.stem(x))).mean((2, 3)))


# -- Inception ---------------------------------------------------------------------------------
class InceptionBlock(nn.Module):
    """Parallel branches concatenated: 1x1; 1x1-3x3; 1x1-3x3-3x3 (the factorized 5x5);
    MaxPool(3,1,1)-1x1; AvgPool(3,1,1)-1x1."""

    def __init__(self, cin, b=4, count_include_pad=True):
        super().__init__()
        self.b1 = conv_bn_relu(cin, b, 1)
        self.b2 = nn.Sequential(conv_bn_relu(cin, b, 1), conv_bn_relu(b, 2 * b, 3))
        self.b3 = nn.Sequential(
            conv_bn_relu(cin, b, 1), conv_bn_relu(b, b, 3), conv_bn_relu(b, b, 3)
        )
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_relu(cin, b, 1))
        self.b5 = nn.Sequential(
            nn.AvgPool2d(3, 1, 1, count_include_pad=count_include_pad), conv_bn_relu(cin, b, 1)
        )
        self.cout = 6 * b

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x), self.b5(x)], 1)


class TinyInception(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, 12, 3), nn.MaxPool2d(3, 2, 1))
        self.block1 = InceptionBlock(12, 4, count_include_pad=True)
        self.pool = nn.MaxPool2d(2, 2)
        self.block2 = InceptionBlock(self.block1.cout, 6, count_include_pad=False)
        self.fc = nn.Linear(self.block2.cout, num_classes)

    def forward(self, x):
        x = self.block2(self.pool(self.block1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# -- ViT ---------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Multi-head self-attention written out: one qkv Linear, q k^T / sqrt(d), softmax, @ v."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TorchAttention(nn.Module):
    """nn.MultiheadAttention as a self-attention layer."""

    def __init__(self, dim, heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        with torch.no_grad():  # non-zero in-projection biases
            self.mha.in_proj_bias.copy_(0.1 * torch.randn(3 * dim))

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class ViTBlock(nn.Module):
    def __init__(self, dim, heads, attention: type[nn.Module]):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding conv (4x4/4), class token, learned positional embedding, pre-norm blocks
    (LayerNorm, multi-head self-attention, GELU MLP), LayerNorm and a Linear head on the class
    token."""

    attention: type[nn.Module] = SelfAttention

    def __init__(self, image=32, patch=4, dim=24, heads=3, depth=2, num_classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        tokens = (image // patch) ** 2
        self.cls = nn.Parameter(0.5 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.2 * torch.randn(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, self.attention) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        t = self.norm(self.blocks(t))
        return self.head(t[:, 0])


class TinyViTMHA(TinyViT):
    """The same ViT with nn.MultiheadAttention."""

    attention = TorchAttention


class ShapeFreeViT(nn.Module):
    """A ViT for images of any size, meant to be exported with its batch, height and width free:
    patch embedding conv (4x4/4), a depthwise 3x3 conv on the patch grid as its positional
    encoding (conditional positional encoding: no table of a fixed token count), the patch grid
    flattened to tokens (`flatten(2).transpose`, shape-dependent at free dims), a class token
    expanded to the batch, pre-norm blocks (LayerNorm, multi-head self-attention written with
    matmuls, GELU MLP), LayerNorm, and the class token read by `t[:, :1].squeeze(1)`: at a free
    token count the legacy exporter writes that squeeze as Shape -> Gather -> Equal -> If, so
    that the static control-flow fold and shape folding are exercised."""

    def __init__(self, patch=4, dim=16, heads=2, depth=2, num_classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.cls = nn.Parameter(0.5 * torch.randn(1, 1, dim))
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, SelfAttention) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        f = self.patch(x)
        t = (f + self.pos(f)).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
        t = self.norm(self.blocks(t))
        return self.head(t[:, :1].squeeze(1))


# -- recurrent: a CRNN text recogniser ----------------------------------------------------------
class CRNN(nn.Module):
    """Shi et al. 2015's CRNN: a conv stack (conv3x3-BN-ReLU-MaxPool, the last two pools halving
    and quartering the height only) that turns a grey text line [batch, 1, 32, W] into W/4
    columns of features, 2 bidirectional LSTM layers over the columns, a Linear CTC head and
    log_softmax over the classes (blank + 26 letters + 10 digits): [W/4, batch, classes].
    `widths` and `hidden` size it (the zoo's is tiny; tests/test_recurrent.py builds the real
    one)."""

    def __init__(self, widths=(8, 16, 16, 24), hidden=12, classes=37):
        super().__init__()
        pools = (2, 2, (2, 1), (4, 1))
        layers: list[nn.Module] = []
        cin = 1
        for cout, pool in zip(widths, pools):
            layers += [conv_bn_relu(cin, cout), nn.MaxPool2d(pool)]
            cin = cout
        self.convs = nn.Sequential(*layers)
        self.lstm = nn.LSTM(cin, hidden, num_layers=2, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        seq = self.convs(x).squeeze(2).permute(2, 0, 1)  # [W/4, batch, features]
        y, _ = self.lstm(seq)
        return F.log_softmax(self.head(y), -1)


# -- super-resolution: ESPCN, EDSR -------------------------------------------------------------
class ESPCN(nn.Module):
    """Shi et al. 2016: conv5x5-tanh, conv3x3-tanh, conv3x3 to 3·r² channels, pixel shuffle
    (DepthToSpace, CRD)."""

    def __init__(self, scale=3, c=3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, 16, 5, 1, 2),
            nn.Tanh(),
            nn.Conv2d(16, 8, 3, 1, 1),
            nn.Tanh(),
            nn.Conv2d(8, c * scale * scale, 3, 1, 1),
        )
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.shuffle(self.body(x))


class EDSRBlock(nn.Module):
    def __init__(self, c, res_scale=0.1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(True), nn.Conv2d(c, c, 3, 1, 1))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.body(x)


class TinyEDSR(nn.Module):
    """EDSR: mean shift, head conv, residual blocks (no BN, residual scaling), body conv with a
    global skip, conv + pixel-shuffle x2 upsampler, tail conv, mean shift back."""

    def __init__(self, c=16, blocks=3, scale=2):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
        self.head = nn.Conv2d(3, c, 3, 1, 1)
        self.body = nn.Sequential(*[EDSRBlock(c) for _ in range(blocks)], nn.Conv2d(c, c, 3, 1, 1))
        self.up = nn.Sequential(nn.Conv2d(c, c * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))
        self.tail = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, x):
        h = self.head(x - self.mean)
        h = h + self.body(h)
        return self.tail(self.up(h)) + self.mean


# -- restoration: DnCNN, pix2pix, FFDNet -------------------------------------------------------
class TinyDnCNN(nn.Module):
    """Zhang et al. 2017: conv-ReLU, (conv-BN-ReLU) x depth, conv; residual output x - noise."""

    def __init__(self, c=3, width=16, depth=4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, 1, 1), nn.ReLU(True)]
        for _ in range(depth):
            layers += [
                nn.Conv2d(width, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(True),
            ]
        layers.append(nn.Conv2d(width, c, 3, 1, 1, bias=False))
        self.dncnn = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.dncnn(x)


class UnetSkipBlock(nn.Module):
    """pix2pix's UnetSkipConnectionBlock: [LeakyReLU(0.2)] conv4x4/2 [BN] - submodule - ReLU
    ConvTranspose4x4/2 [BN] [Dropout] (Tanh at the outermost), concatenated with its input."""

    def __init__(
        self, outer, inner, cin=None, sub=None, outermost=False, innermost=False, dropout=False
    ):
        super().__init__()
        self.outermost = outermost
        cin = outer if cin is None else cin
        down = [nn.Conv2d(cin, inner, 4, 2, 1, bias=False)]
        if not outermost:
            down.insert(0, nn.LeakyReLU(0.2))
            if not innermost:
                down.append(nn.BatchNorm2d(inner))
        up_in = inner if innermost else 2 * inner
        up: list[nn.Module] = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=outermost)]
        if outermost:
            up.append(nn.Tanh())
        else:
            up.append(nn.BatchNorm2d(outer))
            if dropout:
                up.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*down, *([sub] if sub is not None else []), *up)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class Pix2PixUNet(nn.Module):
    """pix2pix U-Net generator, 5 downsamplings (32x32 -> 1x1 bottleneck), BatchNorm, dropout in
    the inner decoder blocks (identity in eval)."""

    def __init__(self, c=3, ngf=8):
        super().__init__()
        blk = UnetSkipBlock(8 * ngf, 8 * ngf, innermost=True)
        blk = UnetSkipBlock(4 * ngf, 8 * ngf, sub=blk, dropout=True)
        blk = UnetSkipBlock(2 * ngf, 4 * ngf, sub=blk)
        blk = UnetSkipBlock(ngf, 2 * ngf, sub=blk)
        self.model = UnetSkipBlock(c, ngf, cin=c, sub=blk, outermost=True)

    def forward(self, x):
        return self.model(x)


def pixel_unshuffle(x, r: int = 2):
    """SpaceToDepth written with reshape/permute, in the order that pixel_shuffle (CRD) undoes."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // r, r, w // r, r).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * r * r, h // r, w // r)


class TinyFFDNet(nn.Module):
    """FFDNet (Zhang et al. 2018) in miniature: pixel-unshuffle the image into 4C half-size maps,
    concatenate the noise-level map (a second model input), conv-ReLU, (conv-BN-ReLU) x depth,
    conv to 4C, pixel shuffle back; the output is the image minus the estimated noise."""

    def __init__(self, c=3, width=24, depth=3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(4 * c + 1, width, 3, 1, 1), nn.ReLU()]
        for _ in range(depth):
            layers += [
                nn.Conv2d(width, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
        layers.append(nn.Conv2d(width, 4 * c, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x, sigma):
        noise = F.pixel_shuffle(self.body(torch.cat([pixel_unshuffle(x), sigma], 1)), 2)
        return x - noise


# -- Keras-style PReLU, activation mixes, GroupNorm --------------------------------------------
class KerasPReLU(nn.Module):
    """PReLU as Keras exports it: relu(x) - alpha * relu(-x), alpha per channel."""

    def __init__(self, c):
        super().__init__()
        self.alpha = nn.Parameter(torch.rand(c, 1, 1) * 0.35 + 0.05)

    def forward(self, x):
        return F.relu(x) - self.alpha * F.relu(-x)


class KerasPReLUNet(nn.Module):
    def __init__(self, num_out=6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1),
            KerasPReLU(8),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, 1, 1),
            nn.BatchNorm2d(16),
            KerasPReLU(16),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, 1, 1),
            KerasPReLU(16),
        )
        self.fc = nn.Linear(16, num_out)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class ActivationMix(nn.Module):
    """Two conv layers whose channels are split (chunk) into twelve groups, each through its own
    unit: Hardtanh(-2, 2), ReLU6, Hardsigmoid, Hardswish, ELU, SELU, Softplus (beta 1 and 2), Mish,
    GELU (tanh approximation), Tanh, Sigmoid; the second layer rotates the assignment. Units side
    by side rather than stacked twelve deep, so that float32 rounding stays far below 1e-5."""

    def __init__(self, c=2):
        super().__init__()
        self.acts = nn.ModuleList(
            [
                nn.Hardtanh(-2.0, 2.0),
                nn.ReLU6(),
                nn.Hardsigmoid(),
                nn.Hardswish(),
                nn.ELU(0.7),
                nn.SELU(),
                nn.Softplus(),
                nn.Softplus(beta=2.0),
                nn.Mish(),
                nn.GELU(approximate="tanh"),
                nn.Tanh(),
                nn.Sigmoid(),
            ]
        )
        n = len(self.acts)
        self.conv1 = nn.Conv2d(3, n * c, 3, 1, 1)
        self.conv2 = nn.Conv2d(n * c, n * c, 3, 1, 1)
        self.out = nn.Conv2d(n * c, 3, 1)

    def mix(self, h, shift: int):
        n = len(self.acts)
        return torch.cat(
            [self.acts[(i + shift) % n](part) for i, part in enumerate(h.chunk(n, 1))], 1
        )

    def forward(self, x):
        return self.out(self.mix(self.conv2(self.mix(self.conv1(x), 0)), 5))


class GroupNormNet(nn.Module):
    """nn.GroupNorm with 4 groups, 1 group (LayerNorm over C,H,W) and one group per channel."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, 2, 1),
            nn.GroupNorm(1, 16),
            nn.ReLU(),
            nn.Conv2d(16, 24, 3, 2, 1),
            nn.GroupNorm(24, 24),
            nn.ReLU(),
        )
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


# -- resampling and padding ----------------------------------------------------------------------
class UpsamplerNet(nn.Module):
    """F.pad reflect / replicate / constant (a non-zero value: a bias), F.interpolate bicubic x2,
    then to a non-integer size with nearest, bilinear (align_corners False and True) and bicubic
    (align_corners True), concatenated. (nearest-exact: NearestExactNet below.)"""

    def __init__(self, c=6):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3)
        self.conv2 = nn.Conv2d(c, c, 3)
        self.conv3 = nn.Conv2d(4 * c, c, 3)
        self.out = nn.Conv2d(c, 3, 1)

    def forward(self, x):
        h = F.relu(self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        h = F.interpolate(h, scale_factor=2, mode="bicubic", align_corners=False)
        h = F.relu(self.conv2(F.pad(h, (2, 0, 1, 1), mode="replicate")))
        size = (24, 20)
        h = torch.cat(
            [
                F.interpolate(h, size=size, mode="nearest"),
                F.interpolate(h, size=size, mode="bilinear", align_corners=False),
                F.interpolate(h, size=size, mode="bilinear", align_corners=True),
                F.interpolate(h, size=size, mode="bicubic", align_corners=True),
            ],
            1,
        )
        h = F.relu(self.conv3(F.pad(h, (1, 1, 1, 1), mode="constant", value=0.5)))
        return self.out(h)


class NearestExactNet(nn.Module):
    """F.interpolate(mode="nearest-exact") between two conv-ReLU layers. The legacy exporter
    cannot export it (aten::_upsample_nearest_exact2d); dynamo writes a constant-index GatherND."""

    def __init__(self, c=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, 1, 1)
        self.conv2 = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = F.interpolate(h, size=(24, 20), mode="nearest-exact")
        return self.conv2(F.relu(h))


# -- MLP-Mixer ---------------------------------------------------------------------------------
class MixerBlock(nn.Module):
    def __init__(self, tokens, dim, token_hidden, channel_hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(
            nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = nn.Sequential(
            nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim)
        )

    def forward(self, x):  # x: (B, tokens, dim)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class TinyMixer(nn.Module):
    """MLP-Mixer: patch embedding, token-mixing and channel-mixing MLPs (transposes, Linear, GELU,
    LayerNorm), mean over tokens, Linear head. No attention."""

    def __init__(self, image=32, patch=4, dim=16, depth=2, num_classes=10):
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, dim, 32, 32) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(t)).mean(1))


# -- classifiers ending in (log-)softmax -------------------------------------------------------
class SoftmaxClassifier(nn.Module):
    """Conv-BN-ReLU-MaxPool x2, GAP, Linear, then log_softmax or softmax over the classes."""

    log = True

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 8),
            nn.MaxPool2d(2),
            conv_bn_relu(8, 16),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        logits = self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
        return F.log_softmax(logits, dim=1) if self.log else F.softmax(logits, dim=1)


class ProbabilityClassifier(SoftmaxClassifier):
    log = False


# -- registry ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Arch:
    ctor: type[nn.Module]
    shape: tuple[int, ...]  # the interpreted input x
    piecewise: bool  # only piecewise-linear units: A_x is the Jacobian at x
    ops: frozenset[str]  # ONNX ops every export must contain ("A|B": either; a coverage guard)
    others: tuple[tuple[str, tuple[int, ...]], ...] = ()  # further inputs (held fixed)
    input_scale: float = 1.0  # a wider input, so that saturating units saturate
    reference: bool = True  # the torch reference interpreter below knows every unit
    exporters: tuple[str, ...] = ("legacy", "dynamo")  # those that can export it at all
    dynamic: tuple[tuple[int, str], ...] = ()  # axes of x exported free, by name (dynamic axes)


def _ops(*names: str) -> frozenset[str]:
    return frozenset(names)


ARCHITECTURES: dict[str, Arch] = {
    "vgg": Arch(TinyVGG, (1, 3, 32, 32), True, _ops("Conv", "Relu", "MaxPool", "Gemm")),
    "densenet": Arch(
        TinyDenseNet,
        (1, 3, 32, 32),
        True,
        _ops("BatchNormalization", "Concat", "AveragePool", "Relu"),
    ),
    "mobilenetv2": Arch(
        TinyMobileNetV2, (1, 3, 32, 32), True, _ops("Clip", "Conv", "Add"), input_scale=3.0
    ),
    "shufflenetv2": Arch(
        TinyShuffleNetV2,
        (1, 3, 32, 32),
        True,
        _ops("Split|Slice", "Transpose", "Reshape", "Concat", "MaxPool", "Relu"),
    ),
    "inception": Arch(
        TinyInception, (1, 3, 32, 32), True, _ops("MaxPool", "AveragePool", "Concat", "Relu")
    ),
    "vit": Arch(
        TinyViT,
        (1, 3, 32, 32),
        False,
        _ops("Softmax", "MatMul", "LayerNormalization", "Erf", "Concat"),
        reference=False,
    ),
    "vit_mha": Arch(
        TinyViTMHA,
        (1, 3, 32, 32),
        False,
        _ops("Softmax", "MatMul", "LayerNormalization", "Erf"),
        reference=False,
    ),
    "espcn": Arch(ESPCN, (1, 3, 16, 16), False, _ops("Tanh", "DepthToSpace")),
    "edsr": Arch(TinyEDSR, (1, 3, 16, 16), True, _ops("Relu", "DepthToSpace", "Sub", "Add")),
    "dncnn": Arch(TinyDnCNN, (1, 3, 32, 32), True, _ops("Relu", "Conv", "Sub")),
    "pix2pix": Arch(
        Pix2PixUNet,
        (1, 3, 32, 32),
        False,
        _ops("LeakyRelu", "Relu", "ConvTranspose", "Tanh", "Concat"),
    ),
    "ffdnet": Arch(
        TinyFFDNet,
        (1, 3, 32, 32),
        True,
        _ops("Reshape", "Transpose", "Concat", "DepthToSpace", "Relu"),
        others=(("sigma", (1, 1, 16, 16)),),
    ),
    "keras_prelu": Arch(
        KerasPReLUNet, (1, 3, 24, 24), True, _ops("Relu", "Neg", "Mul", "Sub", "MaxPool")
    ),
    "activations": Arch(
        ActivationMix,
        (1, 3, 16, 16),
        False,
        _ops(
            "Clip",
            "HardSigmoid",
            "HardSwish",
            "Elu",
            "Selu",
            "Softplus",
            "Tanh",
            "Sigmoid",
            "Mish|Softplus",
        ),
        input_scale=3.0,
    ),
    "groupnorm": Arch(GroupNormNet, (1, 3, 32, 32), False, _ops("InstanceNormalization")),
    "upsampler": Arch(UpsamplerNet, (1, 3, 16, 16), True, _ops("Resize", "Pad", "Concat")),
    "nearest_exact": Arch(
        NearestExactNet, (1, 3, 16, 16), True, _ops("GatherND"), exporters=("dynamo",)
    ),
    "mixer": Arch(
        TinyMixer, (1, 3, 32, 32), False, _ops("Transpose", "MatMul", "LayerNormalization", "Erf")
    ),
    "vit_dynamic": Arch(
        ShapeFreeViT,
        (1, 3, 16, 24),
        False,
        _ops("Shape", "Softmax", "MatMul", "LayerNormalization", "Erf", "Concat"),
        reference=False,
        dynamic=((0, "batch"), (2, "height"), (3, "width")),
    ),
    "crnn": Arch(
        CRNN,
        (1, 1, 32, 48),
        False,
        _ops("LSTM", "MaxPool", "Relu", "LogSoftmax"),
        reference=False,
    ),
    "logsoftmax_classifier": Arch(
        SoftmaxClassifier, (1, 3, 32, 32), False, _ops("LogSoftmax", "MaxPool")
    ),
    "softmax_classifier": Arch(
        ProbabilityClassifier, (1, 3, 32, 32), False, _ops("Softmax", "MaxPool")
    ),
}


def build(name: str, seed: int = SEED):
    """(module, x, others): the named architecture with seeded weights in eval mode, its seeded
    input x and its other inputs by name (positive noise levels for FFDNet's sigma map)."""
    arch = ARCHITECTURES[name]
    torch.manual_seed(seed)
    module = tm.init_weights(arch.ctor(), seed).eval()
    x = tm.make_input(arch.shape, seed + 1) * arch.input_scale
    others = {}
    for i, (other, shape) in enumerate(arch.others):
        g = torch.Generator().manual_seed(seed + 2 + i)
        others[other] = 25 / 255 + 0.05 * torch.rand(shape, generator=g)
    return module, x, others


def export(
    module: nn.Module,
    x: torch.Tensor,
    others: dict,
    path,
    exporter: str,
    opset: int = 17,
    dynamic: tuple[tuple[int, str], ...] = (),
) -> str:
    """Write `module` at these inputs to a single-file ONNX model: inputs named x and then the
    names of `others`, one output y; `exporter` is "legacy" (dynamo=False) or "dynamo".
    `dynamic`: (axis, name) pairs of x written free (the legacy exporter's dynamic_axes, dynamo's
    dynamic_shapes); the output's shape is then the exporter's own inference."""
    from onnxscope.converters.pytorch import export as export_one

    if exporter not in ("legacy", "dynamo"):
        raise ValueError(f"unknown exporter {exporter!r}")
    dynamo = exporter == "dynamo"
    if not others and not dynamic:
        return export_one(module, x, path, opset=opset, dynamo=dynamo)
    # several inputs or free axes: the same choices as onnxscope.converters.pytorch.export
    path = os.fspath(path)
    args = (x, *others.values())
    names = ["x", *others]
    module = module.eval()
    with torch.no_grad():
        if dynamo:
            free = {axis: torch.export.Dim(name) for axis, name in dynamic} or None
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=names,
                output_names=["y"],
                external_data=False,
                dynamic_shapes=(free, *[None] * len(others)) if dynamic else None,
            )
            program.save(path)
        else:
            torch.onnx.export(
                module,
                args,
                path,
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=["y"],
                dynamic_axes={"x": dict(dynamic)} if dynamic else None,
            )
    return path


def forward(module: nn.Module, x: torch.Tensor, others: dict) -> torch.Tensor:
    with torch.no_grad():
        return module(x, *others.values())


class WithFixedInputs(nn.Module):
    """x -> module(x, *others): the map onnxscope interprets, the other inputs held fixed (and
    broadcast over x's batch, so that a batch of probes sees the same sigma map)."""

    def __init__(self, module: nn.Module, others: dict):
        super().__init__()
        self.module = module
        self.names = list(others)
        for name, value in others.items():
            self.register_buffer(f"fixed_{name}", value)

    def forward(self, x):
        fixed = [getattr(self, f"fixed_{n}") for n in self.names]
        return self.module(x, *[v.expand(x.shape[0], *v.shape[1:]) for v in fixed])


def as_function(module: nn.Module, others: dict) -> nn.Module:
    """The module as a function of x alone (itself when it has no other input)."""
    return WithFixedInputs(module, others).eval() if others else module


# -- a torch reference interpreter for the zoo --------------------------------------------------
# torch_models' reference (the paper's LinearScope written against torch: a batch
# [x, z_1 … z_K, 0] runs through a float64 copy of the module with every unit frozen at row x),
# extended to the units of the zoo, each frozen as README.md's table says:
#   Hardtanh / ReLU6 (Clip): slope and intercept of the active piece;
#   Hardsigmoid and Sigmoid as units on a feature path (no gates in the zoo): Hardsigmoid's active
#   piece, Sigmoid's secant through (0, ½);
#   ELU, SELU, Softplus, Mish, GELU (tanh approximation): secant gain (f(u) − f(0))/u, intercept
#   f(0) (the exporters' decompositions — Mish as x·tanh(softplus(x)), GELU as x·½(1 + tanh(…)),
#   Softplus(β) as softplus(βx)/β — freeze to the same map);
#   Softplus above its threshold (beta·x > 20): the identity piece, as torch computes and the
#   dynamo exporter writes it (the legacy exporter drops the threshold: `softplus_threshold`);
#   Softmax and LogSoftmax centred on row x's first maximum k (v = u − u_k): exp(v)/S with S
#   frozen and exp by its secant, v − log S; Sigmoid/Softplus far below f(0): frozen whole;
#   GroupNorm: centering linear, 1/σ of each group frozen.
# Attention (a product of two input-dependent tensors) is refused: which operand onnxscope freezes
# is its own choice, not a property of the network.
from torch.overrides import TorchFunctionMode  # noqa: E402

from onnxscope.rewrite.rules.units import SOFTMAX_TAIL  # noqa: E402


def _secant(fn):
    def frozen(u, *args, **kwargs):
        kwargs.pop("inplace", None)
        u0 = u[:1]
        f0 = fn(torch.zeros_like(u0), *args, **kwargs)
        h = 1e-6
        d0 = (
            fn(torch.full_like(u0, h), *args, **kwargs)
            - fn(torch.full_like(u0, -h), *args, **kwargs)
        ) / (2 * h)
        near = u0.abs() < 1e-12
        safe = torch.where(near, torch.ones_like(u0), u0)
        y0 = fn(u0, *args, **kwargs)
        gain = torch.where(near, d0, (fn(safe, *args, **kwargs) - f0) / safe)
        # f(0) != 0 and the output far below it: the unit frozen whole (README's table)
        saturated = y0.abs() < f0.abs() / 16
        return torch.where(saturated, y0, gain * u + f0)

    return frozen


def _hardtanh(u, min_val=-1.0, max_val=1.0, inplace=False):
    u0 = u[:1]
    inside = (u0 > min_val) & (u0 < max_val)
    return torch.where(inside, u, torch.where(u0 <= min_val, min_val, max_val).to(u.dtype))


def _relu6(u, inplace=False):
    return _hardtanh(u, 0.0, 6.0)


def _hardsigmoid_unit(u, inplace=False):
    return _hardtanh(u / 6 + 0.5, 0.0, 1.0)


def _centred(u, dim):
    """v = u - u_k with k the first maximum of row x, and S = sum exp(v) at row x."""
    u0 = u[:1]
    k = torch.argmax(u0, dim, keepdim=True)  # torch returns the first maximal index
    v = u - torch.gather(u, dim, k.expand(*u.shape[:dim], 1, *u.shape[dim + 1 :]))
    return v, torch.exp(v[:1]).sum(dim, keepdim=True)


def _softmax(u, dim, *args, **kwargs):
    # exp(v) by its secant through (0, 1), S frozen: y = (exp(v0) - 1)/(v0 S) * v + 1/S
    v, total = _centred(u, dim)
    v0 = v[:1]
    near = v0.abs() < 1e-12
    gain = torch.where(near, torch.ones_like(v0), torch.expm1(v0) / torch.where(near, 1, v0))
    tail = v0 < SOFTMAX_TAIL  # the far tail frozen whole
    return torch.where(tail, torch.exp(v0) / total, gain / total * v + 1 / total)


def _log_softmax(u, dim, *args, **kwargs):
    v, total = _centred(u, dim)
    return v - torch.log(total)


def _group_norm(u, num_groups, weight=None, bias=None, eps=1e-5):
    g = u.reshape(u.shape[0], num_groups, -1)
    var0 = g[:1].var(dim=2, unbiased=False, keepdim=True)
    y = ((g - g.mean(dim=2, keepdim=True)) / torch.sqrt(var0 + eps)).reshape(u.shape)
    shape = (1, -1, *([1] * (u.dim() - 2)))
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _softplus(threshold_piece: bool):
    """torch's softplus is x itself where beta·x > threshold, and the dynamo exporter keeps that
    (Where(Greater(beta·x, threshold), x, Softplus(beta·x)/beta)): there the active piece is the
    identity. The legacy exporter writes Softplus alone, so its secant applies everywhere."""
    secant = _secant(F.softplus)

    def frozen(u, beta=1.0, threshold=20.0):
        y = secant(u, beta, threshold)
        if not threshold_piece:
            return y
        return torch.where(beta * u[:1] > threshold, u, y)

    return frozen


def _gelu(u, approximate="none"):
    if approximate == "none":
        return tm._FROZEN_RULES[F.gelu](u)
    return _secant(lambda v: F.gelu(v, approximate=approximate))(u)


_ZOO_RULES = {
    **tm._FROZEN_RULES,
    F.hardtanh: _hardtanh,
    F.relu6: _relu6,
    F.hardsigmoid: _hardsigmoid_unit,
    torch.sigmoid: _secant(torch.sigmoid),
    F.elu: _secant(F.elu),
    F.selu: _secant(F.selu),
    torch.selu: _secant(torch.selu),
    F.softplus: _softplus(True),
    F.mish: _secant(F.mish),
    F.gelu: _gelu,
    F.softmax: _softmax,
    torch.softmax: _softmax,
    F.log_softmax: _log_softmax,
    torch.log_softmax: _log_softmax,
    F.group_norm: _group_norm,
}
_ZOO_REFUSED = (tm._REFUSED - set(_ZOO_RULES)) | {
    torch.matmul,
    torch.Tensor.__matmul__,
    torch.bmm,
    torch.baddbmm,
    F.multi_head_attention_forward,
    F.scaled_dot_product_attention,
}


class _ZooFreeze(TorchFunctionMode):
    def __init__(self, softplus_threshold: bool = True):
        super().__init__()
        self.hits: dict[str, int] = {}
        self.rules = {**_ZOO_RULES, F.softplus: _softplus(softplus_threshold)}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ZOO_REFUSED:
            raise NotImplementedError(f"zoo reference interpreter: no frozen rule for {func}")
        rule = self.rules.get(func)
        if rule is None:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        self.hits[name] = self.hits.get(name, 0) + 1
        return rule(*args, **kwargs)


def _frozen_forward(fn: nn.Module, x, z, grad: bool, softplus_threshold: bool = True):
    import copy

    ref = copy.deepcopy(fn).to(torch.float64).eval()
    k = z.shape[0]
    probes = z.reshape(k * x.shape[0], *x.shape[1:]).to(torch.float64)
    if grad:
        probes = probes.detach().requires_grad_(True)
    x64 = x.to(torch.float64)
    batch = torch.cat([x64, probes, torch.zeros_like(x64)])
    mode = _ZooFreeze(softplus_threshold)
    assert x.shape[0] == 1, "row 0 of the batch carries the decisions"
    with torch.set_grad_enabled(grad), mode:
        out = ref(batch)
    f, az, c = out[:1], out[1:-1], out[-1:]
    return f, (az - c).reshape(k, *f.shape), c, mode.hits, probes


def reference_interpreter(
    fn: nn.Module, x: torch.Tensor, z: torch.Tensor, softplus_threshold: bool = True
):
    """(F(x), A_x z, c_x, hits) of the frozen network in float64; fn is a function of x alone
    (`as_function`), z is (K, *x.shape). softplus_threshold: torch's softplus threshold is in the
    graph (dynamo) or not (legacy), see `_softplus`."""
    f, az, c, hits, _ = _frozen_forward(fn, x, z, False, softplus_threshold)
    return f, az, c, hits


def reference_adjoint(
    fn: nn.Module, x: torch.Tensor, w: torch.Tensor, softplus_threshold: bool = True
) -> torch.Tensor:
    """A_x^T w_k of the frozen float64 network: the gradient of Σ_k <A_x z_k, w_k> in z."""
    k = w.shape[0]
    z = torch.zeros(k, *x.shape, dtype=torch.float64)
    _, az, _, _, probes = _frozen_forward(fn, x, z, True, softplus_threshold)
    (grad,) = torch.autograd.grad((az * w.to(torch.float64)).sum(), probes)
    return grad.reshape(k, *x.shape).detach()


__all__ = [
    "ARCHITECTURES",
    "Arch",
    "WithFixedInputs",
    "build",
    "export",
    "forward",
    "as_function",
    "reference_interpreter",
    "reference_adjoint",
]
