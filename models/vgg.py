"""VGG-16: configuration "D" of Simonyan & Zisserman, "Very Deep Convolutional
Networks for Large-Scale Image Recognition", ICLR 2015.

Thirteen 3x3 convolutions with ReLU in five stages separated by 2x2 max
pooling, then three fully connected layers. The layout (an adaptive average
pool to 7x7 in front of the classifier, dropout between the hidden FC layers)
follows the common PyTorch ImageNet layout, so the full model has the usual
138,357,544 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .weights import image_input, materialise

# Output channels per conv; "M" is a 2x2 max pool. Configuration D of the paper.
STAGES_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG feature extractor plus three-layer classifier.

    ``width_divisor`` divides every conv width (1 gives VGG-16 proper);
    ``pool_size`` is the spatial size the adaptive pool produces and the
    classifier is built for.
    """

    def __init__(
        self,
        *,
        width_divisor: int = 1,
        pool_size: int = 7,
        hidden: int = 4096,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in STAGES_D:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                width = item // width_divisor
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool_size * pool_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build_vgg16(small: bool = False) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """VGG-16 on a 224x224 image, or a 1/8-width copy on a 32x32 image.

    The small copy keeps all 13 convs and 5 pools; at 32x32 the last pool
    leaves 1x1, so its adaptive pool is sized 1 and (like the full model's
    7x7 pool on a 224x224 input) is an identity.
    """
    # The paper draws all weights from N(0, 0.01) (FC layers keep that here);
    # convs use He et al.'s std instead, which makes 16 layers trainable from
    # scratch without the paper's staged initialisation from a shallower net.
    if small:
        # FC fan-ins here are ~100x smaller than in the full model, so std
        # 0.1 rather than 0.01 keeps each FC layer's gain about the same.
        model = materialise(
            lambda: VGG(width_divisor=8, pool_size=1, hidden=128, num_classes=10), seed=0, linear_std=0.1
        )
        return model, (image_input(seed=1, resolution=32),)
    model = materialise(VGG, seed=0, linear_std=0.01)
    return model, (image_input(seed=1, resolution=224),)
