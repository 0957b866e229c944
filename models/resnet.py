"""ResNet-50: He, Zhang, Ren & Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016.

A 7x7 stem with max pooling, then four stages of bottleneck blocks
(1x1 reduce, 3x3, 1x1 expand by 4, each conv followed by batch norm) with
(3, 4, 6, 3) blocks. The first block of a stage changes the channel count and
(from stage 2 on) halves the resolution, so its shortcut is a strided 1x1
conv plus batch norm. Stride sits in the 3x3 conv ("v1.5"), as in most
PyTorch ResNets, rather than in the first 1x1 as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .weights import image_input, materialise, scale_gamma

EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 residual branch with an identity or projection shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNet(nn.Module):
    """Bottleneck ResNet; ``base_width`` is the 3x3 width of the first stage (64 in the paper)."""

    def __init__(
        self,
        blocks: tuple[int, ...] = (3, 4, 6, 3),
        *,
        base_width: int = 64,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = base_width
        stages = []
        for index, count in enumerate(blocks):
            width = base_width * 2**index
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(Bottleneck(channels, width, stride if block == 0 else 1))
                channels = width * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _initialise(construct: Callable[[], ResNet]) -> ResNet:
    model = materialise(construct, seed=0, linear_std=0.01)
    # With fixed running statistics BN does not renormalise, and He-scaled
    # convs make each branch about as large as its input, so every block
    # would roughly double the variance (std ~4e3 after 16 blocks). Trained
    # ResNets (and zero-init-residual training) have small last-BN gammas;
    # 0.2 keeps 16 blocks in range without making the branches negligible.
    for module in model.modules():
        if isinstance(module, Bottleneck):
            scale_gamma(module.bn3, 0.2)
    return model


def build_resnet50(small: bool = False) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """ResNet-50 on a 224x224 image, or a 1/4-width, (1, 2, 1, 1)-block copy on 64x64.

    The small copy still has a projection shortcut in every stage and an
    identity shortcut in stage 2.
    """
    if small:
        model = _initialise(lambda: ResNet((1, 2, 1, 1), base_width=16, num_classes=10))
        return model, (image_input(seed=1, resolution=64),)
    return _initialise(ResNet), (image_input(seed=1, resolution=224),)
