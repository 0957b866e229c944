"""DenseNet-161: Huang, Liu, van der Maaten & Weinberger, "Densely Connected
Convolutional Networks", CVPR 2017 (the DenseNet-BC variant).

A 7x7 stem with max pooling, then four dense blocks of (6, 12, 36, 24)
layers. Each layer sees the concatenation of all earlier feature maps of its
block and adds ``growth`` new channels through a pre-activation bottleneck:
BN-ReLU-Conv1x1 (to ``bn_size * growth`` channels) then BN-ReLU-Conv3x3.
Between blocks a transition (BN-ReLU-Conv1x1 halving the channels, 2x2
average pool) halves the resolution. A final BN-ReLU, global average pool and
one linear layer classify.
"""

from __future__ import annotations

import torch
from torch import nn

from .weights import image_input, materialise


class DenseLayer(nn.Module):
    """Pre-activation bottleneck producing ``growth`` channels from all earlier ones."""

    def __init__(self, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__()
        inner = bn_size * growth
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, inner, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(inner)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(inner, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleList):
    """``count`` dense layers; the output is every input and new channel, concatenated."""

    def __init__(self, count: int, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__(DenseLayer(in_channels + i * growth, growth, bn_size) for i in range(count))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Passing the list, not a running concatenation, lets each layer do
        # one concat of all its inputs instead of copying a growing tensor.
        features = [x]
        for layer in self:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 compressing the channels, then a 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.AvgPool2d(kernel_size=2, stride=2),
        )


class DenseNet(nn.Module):
    """DenseNet-BC with compression 0.5; the defaults give DenseNet-161."""

    def __init__(
        self,
        blocks: tuple[int, ...] = (6, 12, 36, 24),
        *,
        growth: int = 48,
        init_features: int = 96,
        bn_size: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        stem = [
            nn.Conv2d(3, init_features, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(init_features),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]
        channels = init_features
        body: list[nn.Module] = []
        for index, count in enumerate(blocks):
            body.append(DenseBlock(count, channels, growth, bn_size))
            channels += count * growth
            if index != len(blocks) - 1:
                body.append(Transition(channels, channels // 2))
                channels //= 2
        self.features = nn.Sequential(*stem, *body, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build_densenet161(small: bool = False) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """DenseNet-161 on a 224x224 image, or a growth-8, (2, 3, 4, 3)-layer copy on 64x64."""
    if small:
        # The classifier's fan-in is 50 rather than 2208; std 0.1 rather than
        # 0.01 keeps its gain about the full model's.
        model = materialise(
            lambda: DenseNet((2, 3, 4, 3), growth=8, init_features=16, num_classes=10), seed=0, linear_std=0.1
        )
        return model, (image_input(seed=1, resolution=64),)
    return materialise(DenseNet, seed=0, linear_std=0.01), (image_input(seed=1, resolution=224),)
