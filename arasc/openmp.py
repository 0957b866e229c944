"""OpenMP's wait policy for a compile (issue 15).

A compile runs two OpenMP runtimes side by side: torch's own libgomp (its int8 GEMM and tensor
ops) and the system's, under numba's parallel loops (SmoothQuant's weight codes); each keeps its
idle threads spinning for a while after every parallel region. On this 2-core machine the
threads of one then take the cores from the other's work, thousands of times per compile:
measured side by side under load 4-5.5, the alpha choice of three of BERT-Large's values ran
2-2.5x faster and ResNet-50's whole compile took 6.1-6.4 s instead of 13-28 s with
OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once). The results are the same numbers: only when the threads wait changes.

A runtime reads the policy when it loads, so it is set before torch is imported; a value the
user set is kept. `arasc compile` and benchmarks/compile_time.py set it; the interpreter does
not (`arasc run` leaves the policy as it is)."""
from __future__ import annotations

import os
import sys


def passive_waits() -> bool:
    """Ask the OpenMP runtimes loaded from now on to put idle threads to sleep; False if torch is
    already loaded (its runtime keeps the policy it read)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules
