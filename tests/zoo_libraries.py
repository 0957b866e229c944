"""Import before torchvision or transformers (which imports torchvision): see
arasc/frontend/torchvision_ops.py."""
from arasc.frontend.torchvision_ops import declare_torchvision_ops

declare_torchvision_ops()
