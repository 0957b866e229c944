"""torchvision 0.28 registers two C++ op schemas at import; the CPU wheel of torch installed
here cannot load its extension, so they are declared first (transformers imports torchvision)."""
import torch

try:
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
except RuntimeError:  # already declared (by the extension itself, or an earlier import)
    pass
