"""torchvision 0.28 registers two C++ op schemas when it imports; where its compiled extension
cannot load beside the installed torch (the CPU wheel here), `import torchvision` fails before
any model definition is reached. Declaring the two schemas first lets the pure-Python model
definitions import; arasc never calls the ops."""
import torch

_LIBRARY = None


def declare_torchvision_ops() -> None:
    global _LIBRARY
    if _LIBRARY is not None or hasattr(torch.ops.torchvision, "nms"):
        return
    try:
        _LIBRARY = torch.library.Library("torchvision", "DEF")
        _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:  # declared meanwhile by torchvision's own extension
        pass
