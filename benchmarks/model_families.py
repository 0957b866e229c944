"""The real torchvision 0.28 architectures of issue 10 at full size (random init, one 224 x 224
image): compile, run on the interpreter-simulator, and compare with PyTorch float (cosine and
top-1). Needs the `zoo` extra; each model takes one to several minutes on one core, which is
why this is a script (tests/test_frontend_families.py checks small same-shape architectures).

    .venv/bin/python benchmarks/model_families.py [MODEL ...]

MODEL is a torchvision.models builder name; default: the issue's classifiers.
"""
from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import torch

from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.frontend.torchvision_ops import declare_torchvision_ops
from arasc.isa.hardware import default_hardware
from arasc.runtime.report import cosine
from arasc.runtime.run import run_file

MODELS = ["mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "shufflenet_v2_x1_0",
          "googlenet"]


def measure(name: str) -> tuple[float, bool, float]:
    import torchvision.models as tvm

    torch.manual_seed(0)
    options = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    module = getattr(tvm, name)(**options).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    model = import_module(module, (x,), name)
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/{name}.aras"
        write_compiled(compile_model(model, default_hardware(), [(x,)], (x,), weights_name(path)), path)
        (got,) = run_file(path).outputs.values()
    with torch.no_grad():
        expected = module(x).numpy()
    return cosine(expected.ravel(), got.ravel()), bool(np.argmax(got) == np.argmax(expected)), \
        time.perf_counter() - start


def main(names: list[str]) -> None:
    declare_torchvision_ops()
    print(f"{'model':<22}{'cosine':>10}{'top-1 agrees':>14}{'seconds':>10}")
    for name in names:
        similarity, agrees, seconds = measure(name)
        print(f"{name:<22}{similarity:>10.5f}{str(agrees):>14}{seconds:>10.0f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or MODELS)
