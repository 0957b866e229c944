"""arasc's model zoo: standard DNNs (VGG-16, ResNet-50, DenseNet-161, BERT) with
seeded weights, reduced variants of each for tests, two small CNNs trained on
scikit-learn's digits, and a pretrained sentence encoder (the `trained` extra).

``ZOO`` maps names to ``ZooModel`` entries; ``get(name)`` looks one up.
"""

from .minilm import MissingPackage
from .zoo import ZOO, ZooModel, get

__all__ = ["ZOO", "MissingPackage", "ZooModel", "get"]
