"""Small CNNs trained on scikit-learn's 8x8 handwritten digits.

scikit-learn bundles the UCI optical-recognition digits (1,797 images, Alpaydin
& Kaynak 1998), so these train offline in seconds and check that compiled code
keeps the accuracy of the float model, not just its outputs on random inputs:
a plain CNN, and a residual one whose skip connections exercise the residual
path of the integer pipeline.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

SEED = 0
TEST_FRACTION = 0.2
EPOCHS = 15
BATCH = 64
EXAMPLE_BATCH = 8


class DigitsCNN(nn.Module):
    """conv3x3(1->16)-BN-ReLU-maxpool, conv3x3(16->32)-BN-ReLU-maxpool, linear(128->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class _Block(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input, then ReLU (He et al. 2016)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class DigitsResNet(nn.Module):
    """conv3x3(1->16)-BN-ReLU, two residual blocks, global average pool, linear(16->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(_Block(16), _Block(16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


@functools.cache
def _split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Imported here, not at the top: scikit-learn takes a second to import, and every compile
    # imports the zoo, most of them for other models.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.images, data.target, test_size=TEST_FRACTION, random_state=SEED, stratify=data.target
    )
    x_train = torch.tensor(x_train, dtype=torch.float32).unsqueeze(1)
    x_test = torch.tensor(x_test, dtype=torch.float32).unsqueeze(1)
    # Standardise with training-set statistics only, as a deployed model would.
    mean, std = x_train.mean(), x_train.std()
    return (
        (x_train - mean) / std,
        torch.tensor(y_train, dtype=torch.int64),
        (x_test - mean) / std,
        torch.tensor(y_test, dtype=torch.int64),
    )


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)`` of a fixed stratified 80/20 split (1,437 / 360).

    Images are float32 [N, 1, 8, 8], standardised as for training; labels int64 [N].
    """
    return tuple(t.clone() for t in _split())


def accuracy(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` whose highest logit under ``fn`` is the label in ``y``."""
    with torch.no_grad():
        return (fn(x).argmax(dim=1) == y).float().mean().item()


def train(seed: int = SEED, architecture: type[nn.Module] = DigitsCNN) -> nn.Module:
    """Train a fresh model of `architecture`; the same seed gives bit-identical weights."""
    x_train, y_train, _, _ = _split()
    threads = torch.get_num_threads()
    # Multi-threaded kernels may split reductions differently depending on
    # the thread count, which changes the rounding and so the trained weights.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = architecture()
        gen = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, EPOCHS)
        model.train()
        for _ in range(EPOCHS):
            for batch in torch.randperm(len(x_train), generator=gen).split(BATCH):
                optimiser.zero_grad()
                F.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
                optimiser.step()
            schedule.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@functools.cache
def _trained_state(architecture: type[nn.Module]) -> dict[str, torch.Tensor]:
    return train(architecture=architecture).state_dict()


def _build(architecture: type[nn.Module]) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    # A fresh copy each time, so a caller that modifies it (e.g. folds its
    # batch norms in place) cannot corrupt the cached weights. Built on the
    # meta device so the caller's global RNG is not consumed by a default init.
    with torch.device("meta"):
        model = architecture()
    model.to_empty(device="cpu").load_state_dict(_trained_state(architecture))
    return model.eval(), (_split()[2][:EXAMPLE_BATCH].clone(),)


def build_digits_cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The trained DigitsCNN (trained once per process) and the first test images."""
    return _build(DigitsCNN)


def build_digits_resnet() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The trained DigitsResNet (trained once per process) and the first test images."""
    return _build(DigitsResNet)
