"""Re-identification networks whose checkpoints users bring: torchreid's
OSNet (and OSNet-AIN) and FastReID's ResNet-IBN baselines (bag of tricks, stronger
baseline). Written here so no training framework is installed; module and
parameter names follow each project's, so their checkpoints load as they
are. Inference only: each network returns the embedding its project
evaluates with (OSNet: the 512-d fc feature; FastReID: the BNNeck feature).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

# --- torchreid OSNet (Zhou et al., ICCV 2019) ---------------------------------------


class ConvLayer(nn.Module):
    """conv -> BN (or instance norm) -> ReLU."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, instance_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, kernel, stride=stride, padding=padding, bias=False, groups=groups)
        self.bn: nn.Module = nn.InstanceNorm2d(channels_out, affine=True) if instance_norm else nn.BatchNorm2d(channels_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(ConvLayer):
    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__(channels_in, channels_out, 1)


class Conv1x1Linear(nn.Module):
    """1x1 conv -> BN (unless the block normalises otherwise), no activation."""

    def __init__(self, channels_in: int, channels_out: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels_out) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.bn is None else self.bn(x)


class LightConv3x3(nn.Module):
    """Pointwise then depthwise 3x3 convolution, BN, ReLU."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False, groups=channels_out)
        self.bn = nn.BatchNorm2d(channels_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Per-channel sigmoid weights from the globally pooled input (shared by every stream of a block)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate_activation(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))


class OSBlock(nn.Module):
    """Omni-scale residual block: four streams of 1 to 4 light 3x3 convolutions, gated and summed."""

    def __init__(self, channels_in: int, channels_out: int, instance_norm: bool = False) -> None:
        super().__init__()
        mid = channels_out // 4
        self.conv1 = Conv1x1(channels_in, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, channels_out)
        self.downsample = Conv1x1Linear(channels_in, channels_out) if channels_in != channels_out else None
        self.IN = nn.InstanceNorm2d(channels_out, affine=True) if instance_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.conv1(x)
        streams = sum(self.gate(stream(reduced)) for stream in (self.conv2a, self.conv2b, self.conv2c, self.conv2d))
        out = self.conv3(streams) + (x if self.downsample is None else self.downsample(x))
        return F.relu(out if self.IN is None else self.IN(out))


class OSNet(nn.Module):
    def __init__(self, channels: tuple[int, int, int, int], instance_norm: bool = False, feature_dim: int = 512) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, channels[0], 7, stride=2, padding=3, instance_norm=instance_norm)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._stage(channels[0], channels[1], reduce=True, instance_norm=instance_norm)
        self.conv3 = self._stage(channels[1], channels[2], reduce=True)
        self.conv4 = self._stage(channels[2], channels[3], reduce=False)
        self.conv5 = Conv1x1(channels[3], channels[3])
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels[3], feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU())

    @staticmethod
    def _stage(channels_in: int, channels_out: int, reduce: bool, instance_norm: bool = False) -> nn.Sequential:
        layers: list[nn.Module] = [OSBlock(channels_in, channels_out, instance_norm),
                                   OSBlock(channels_out, channels_out, instance_norm)]
        if reduce:
            layers.append(nn.Sequential(Conv1x1(channels_out, channels_out), nn.AvgPool2d(2, stride=2)))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.conv4(self.conv3(self.conv2(self.maxpool(self.conv1(x))))))
        return self.fc(torch.flatten(self.global_avgpool(x), 1))


class LightConvStream(nn.Module):
    """`depth` light 3x3 convolutions in a row (OSNet-AIN's naming of a stream)."""

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(LightConv3x3(channels, channels) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AINBlock(nn.Module):
    """OSNet-AIN's omni-scale block; with `instance_norm`, instance norm inside
    the residual branch in place of the last batch norm (its OSBlockINin)."""

    def __init__(self, channels_in: int, channels_out: int, instance_norm: bool) -> None:
        super().__init__()
        mid = channels_out // 4
        self.conv1 = Conv1x1(channels_in, mid)
        self.conv2 = nn.ModuleList(LightConvStream(mid, depth) for depth in range(1, 5))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, channels_out, batch_norm=not instance_norm)
        self.downsample = Conv1x1Linear(channels_in, channels_out) if channels_in != channels_out else None
        self.IN = nn.InstanceNorm2d(channels_out, affine=True) if instance_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.conv1(x)
        branch = self.conv3(sum(self.gate(stream(reduced)) for stream in self.conv2))
        if self.IN is not None:
            branch = self.IN(branch)
        return F.relu(branch + (x if self.downsample is None else self.downsample(x)))


class OSNetAIN(nn.Module):
    """OSNet-AIN x1.0 (Zhou et al., TPAMI 2021): instance norm in the stem and
    in the blocks its architecture search chose."""

    def __init__(self, channels: tuple[int, int, int, int] = (64, 256, 384, 512), feature_dim: int = 512) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, channels[0], 7, stride=2, padding=3, instance_norm=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Sequential(AINBlock(channels[0], channels[1], True), AINBlock(channels[1], channels[1], True))
        self.pool2 = nn.Sequential(Conv1x1(channels[1], channels[1]), nn.AvgPool2d(2, stride=2))
        self.conv3 = nn.Sequential(AINBlock(channels[1], channels[2], False), AINBlock(channels[2], channels[2], True))
        self.pool3 = nn.Sequential(Conv1x1(channels[2], channels[2]), nn.AvgPool2d(2, stride=2))
        self.conv4 = nn.Sequential(AINBlock(channels[2], channels[3], True), AINBlock(channels[3], channels[3], False))
        self.conv5 = Conv1x1(channels[3], channels[3])
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels[3], feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.maxpool(self.conv1(x))))
        x = self.conv5(self.conv4(self.pool3(self.conv3(x))))
        return self.fc(torch.flatten(self.global_avgpool(x), 1))


OSNET_WIDTHS = {
    "osnet_x1_0": (64, 256, 384, 512), "osnet_x0_75": (48, 192, 288, 384),
    "osnet_x0_5": (32, 128, 192, 256), "osnet_x0_25": (16, 64, 96, 128),
}

# --- FastReID ResNet-IBN baselines (Luo et al. bag of tricks; FastReID's SBS) ---------


class IBN(nn.Module):
    """Instance norm on the first half of the channels, batch norm on the rest (IBN-Net a)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.instance_channels = channels // 2
        self.IN = nn.InstanceNorm2d(self.instance_channels, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.instance_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(x, [self.instance_channels, x.shape[1] - self.instance_channels], 1)
        return torch.cat((self.IN(first.contiguous()), self.BN(second.contiguous())), 1)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, channels_in: int, width: int, ibn: bool, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, width, 1, bias=False)
        self.bn1: nn.Module = IBN(width) if ibn else nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class NonLocal(nn.Module):
    """Embedded dot-product non-local block with a BN-initialised residual.
    `inner` channels come from the checkpoint (FastReID's own release uses 1)."""

    def __init__(self, channels: int, inner: int) -> None:
        super().__init__()
        self.inner = inner
        self.g = nn.Conv2d(channels, inner, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.W = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        values = self.g(x).flatten(2).transpose(1, 2)
        affinity = torch.matmul(self.theta(x).flatten(2).transpose(1, 2), self.phi(x).flatten(2))
        mixed = torch.matmul(affinity / affinity.shape[-1], values)
        return x + self.W(mixed.transpose(1, 2).reshape(batch, self.inner, height, width))


class ResNetIBN(nn.Module):
    """FastReID's ResNet-50 backbone: IBN in stages 1-3, last stride 1, and
    (stronger baseline) non-local blocks after the last blocks of stages 2 and 3."""

    def __init__(self, ibn: bool, non_local_inner: int | None, last_stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._channels = 64
        self.layer1 = self._stage(64, 3, 1, ibn)
        self.layer2 = self._stage(128, 4, 2, ibn)
        self.layer3 = self._stage(256, 6, 2, ibn)
        self.layer4 = self._stage(512, 3, last_stride, False)
        # Non-local blocks follow the last 2 blocks of stage 2 and the last 3 of stage 3.
        self.non_local = non_local_inner is not None
        if non_local_inner is not None:
            self.NL_2 = nn.ModuleList(NonLocal(512, non_local_inner) for _ in range(2))
            self.NL_3 = nn.ModuleList(NonLocal(1024, non_local_inner) for _ in range(3))

    def _stage(self, width: int, blocks: int, stride: int, ibn: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._channels != width * 4:
            downsample = nn.Sequential(nn.Conv2d(self._channels, width * 4, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(width * 4))
        layers = [Bottleneck(self._channels, width, ibn, stride, downsample)]
        self._channels = width * 4
        layers += [Bottleneck(self._channels, width, ibn) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        for stage, blocks in ((self.layer2, "NL_2"), (self.layer3, "NL_3")):
            following = len(stage) - len(getattr(self, blocks)) if self.non_local else len(stage)
            for index, block in enumerate(stage):
                x = block(x)
                if index >= following:
                    x = getattr(self, blocks)[index - following](x)
        return self.layer4(x)


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling with a learnt exponent `p` (FastReID's GeneralizedMeanPoolingP)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=1e-6).pow(self.p), 1).pow(1.0 / self.p)


class EmbeddingHead(nn.Module):
    """Pooling then the BNNeck: FastReID evaluates on the feature after the neck."""

    def __init__(self, gem: bool, channels: int = 2048) -> None:
        super().__init__()
        self.pool_layer: nn.Module = GeneralizedMeanPooling() if gem else nn.AdaptiveAvgPool2d(1)
        self.bottleneck = nn.Sequential(nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.pool_layer(x)).flatten(1)


class FastReIDBaseline(nn.Module):
    def __init__(self, ibn: bool = True, non_local_inner: int | None = None, gem: bool = False) -> None:
        super().__init__()
        self.backbone = ResNetIBN(ibn, non_local_inner)
        self.heads = EmbeddingHead(gem)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone(x))


# --- the architectures `build.py import-reid` knows ------------------------------------


def _non_local_inner(weights: dict[str, torch.Tensor]) -> int:
    """FastReID's released non-local blocks have one inner channel (its code divides the ratio by
    itself); read it from the checkpoint, so a corrected release loads too."""
    key = "backbone.NL_2.0.g.weight"
    return int(weights[key].shape[0]) if key in weights else 1


def _osnet(widths: tuple[int, int, int, int], instance_norm: bool = False) -> Builder:
    return lambda weights: OSNet(widths, instance_norm)


Builder = Callable[[dict[str, torch.Tensor]], nn.Module]
ARCHITECTURES: dict[str, Builder] = {
    **{name: _osnet(widths) for name, widths in OSNET_WIDTHS.items()},
    "osnet_ibn_x1_0": _osnet(OSNET_WIDTHS["osnet_x1_0"], instance_norm=True),
    "osnet_ain_x1_0": lambda weights: OSNetAIN(),
    "fastreid-bot-r50-ibn": lambda weights: FastReIDBaseline(ibn=True),
    "fastreid-sbs-r50-ibn": lambda weights: FastReIDBaseline(ibn=True, non_local_inner=_non_local_inner(weights), gem=True),
}
# Checkpoint entries that only training uses (identity classifiers) or that the
# manifest carries instead (FastReID's input normalisation).
TRAINING_ONLY = ("classifier.", "heads.weight", "heads.cls_layer.", "pixel_mean", "pixel_std")
