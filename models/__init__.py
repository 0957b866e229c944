"""arasc's model zoo: standard DNNs (VGG-16, ResNet-50, DenseNet-161, BERT) with
seeded weights, reduced variants of each for tests, and a small trained CNN.

``ZOO`` maps names to ``ZooModel`` entries; ``get(name)`` looks one up.
"""

from .zoo import ZOO, ZooModel, get

__all__ = ["ZOO", "ZooModel", "get"]
