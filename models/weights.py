"""Seeded, untrained weights for the model zoo.

No pretrained weights are available offline, so every zoo model is built with
random weights drawn from the distributions its original authors used for
initialisation. The compiler cares about realistic *shapes* of weight and
activation distributions (for quantisation onto ReRAM conductances), not
about accuracy, so this is enough to exercise it.

Models are instantiated on the meta device and materialised once here, which
skips PyTorch's default initialisation: building BERT-Large would otherwise
draw its 335 M parameters twice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def materialise(construct: Callable[[], nn.Module], seed: int, *, linear_std: float) -> nn.Module:
    """Construct a model without allocating, then give every tensor seeded values.

    Conv weights are drawn from He et al. (2015)'s normal with std
    sqrt(2 / fan_in), which keeps the second moment of ReLU networks constant
    through depth; conv and linear biases from N(0, 0.02). Linear and embedding weights are drawn from a
    normal with ``linear_std`` truncated at two standard deviations (the BERT
    recipe; for CNN classifiers the truncation is immaterial).

    Raises ``TypeError`` if the model holds a parameter or buffer on a module
    type this function does not know: after ``to_empty`` such a tensor would
    contain uninitialised memory.
    """
    with torch.device("meta"):
        model = construct()
    # torch.empty rather than `to_empty`'s empty_like: on a meta tensor empty_like runs through
    # torch's Python references, whose first call imports sympy and symbolic shapes (0.4 s)
    model._apply(lambda t: torch.empty(t.shape, dtype=t.dtype))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=gen)
                _small_bias(module.bias, gen)
            elif isinstance(module, nn.Linear):
                _trunc_normal(module.weight, linear_std, gen)
                _small_bias(module.bias, gen)
            elif isinstance(module, nn.Embedding):
                _trunc_normal(module.weight, linear_std, gen)
            elif isinstance(module, nn.BatchNorm2d):
                _batchnorm(module, gen)
            elif isinstance(module, nn.LayerNorm):
                _affine_norm(module.weight, module.bias, gen)
            elif list(module.parameters(recurse=False)) or list(module.buffers(recurse=False)):
                raise TypeError(f"no initialisation rule for {name!r} ({type(module).__name__})")
    return model.eval()


def scale_gamma(bn: nn.BatchNorm2d, factor: float) -> None:
    """Shrink a batch norm's output scale, e.g. on residual branches (see ResNet)."""
    with torch.no_grad():
        bn.weight.mul_(factor)
        bn.bias.mul_(factor)


def _trunc_normal(weight: torch.Tensor, std: float, gen: torch.Generator) -> None:
    # Redraws the ~4.6 % of samples beyond two standard deviations instead of
    # calling nn.init.trunc_normal_, whose inverse-CDF method takes seconds
    # per 100 M weights; the distribution is the same.
    flat = weight.view(-1)
    flat.normal_(generator=gen)
    outside = (flat.abs() > 2).nonzero().squeeze(1)
    while outside.numel():
        redrawn = torch.randn(outside.numel(), generator=gen)
        flat[outside] = redrawn
        outside = outside[redrawn.abs() > 2]
    flat.mul_(std)


def _small_bias(bias: torch.Tensor | None, gen: torch.Generator) -> None:
    # Trained networks have non-zero biases; zeros would let a compiler that
    # drops or misplaces a bias pass every test.
    if bias is not None:
        nn.init.normal_(bias, std=0.02, generator=gen)


def _affine_norm(weight: torch.Tensor, bias: torch.Tensor, gen: torch.Generator) -> None:
    # Perturbed away from (1, 0) for the same reason as the biases.
    nn.init.normal_(weight, mean=1.0, std=0.05, generator=gen)
    nn.init.normal_(bias, std=0.02, generator=gen)


def _batchnorm(bn: nn.BatchNorm2d, gen: torch.Generator) -> None:
    # Running statistics resembling a trained model's (mean near 0, variance
    # near 1 but not equal to it) so that folding BN into the preceding conv
    # changes the weights by a non-trivial per-channel affine map.
    _affine_norm(bn.weight, bn.bias, gen)
    nn.init.normal_(bn.running_mean, std=0.1, generator=gen)
    nn.init.uniform_(bn.running_var, 0.5, 1.5, generator=gen)
    bn.num_batches_tracked.zero_()


def image_input(seed: int, resolution: int, channels: int = 3) -> torch.Tensor:
    """A seeded standard-normal image batch of one, like a normalised photo."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, channels, resolution, resolution, generator=gen)

