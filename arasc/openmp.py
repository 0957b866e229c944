"""The wait policy of a compile's thread pools (issue 15): idle threads sleep at once.

A compile runs three pools of worker threads side by side: torch's own libgomp (its int8 GEMM
and tensor ops), the system's libgomp under numba's parallel loops (SmoothQuant's weight codes,
shift-weights' code counts), and OpenBLAS's threads under numpy's float64 products. Each keeps
its idle threads spinning for a while after its work is done: OpenMP's, unless
OMP_WAIT_POLICY=PASSIVE, and OpenBLAS's for 2^28 processor cycles (0.1 s) unless
OPENBLAS_THREAD_TIMEOUT lowers that (to 2^4 here, its least). On this 2-core machine the
spinning threads of one pool then take a core from the others' work, thousands of times per
compile. Measured side by side: under load 4-5.5, the alpha choice of three of BERT-Large's
values ran 2-2.5x faster and ResNet-50's whole compile took 6.1-6.4 s instead of 13-28 s with
the OpenMP policy; on a quiet machine, with the policy already set, OpenBLAS's spinning doubled
the time of numba's weight codes in a BERT-Base compile (0.77-1.18 ns a weight and alpha instead
of 0.41) and took 7 of the 22 CPU seconds of BERT-Large's quantize pass. The results are the same
numbers: only when the threads wait changes.

A runtime reads its setting when it loads, so both are set before numpy and torch are
imported; a value the user set is kept. `arasc compile` and benchmarks/compile_time.py set
them; the interpreter does not (`arasc run` leaves them as they are)."""
from __future__ import annotations

import os
import sys

SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}


def passive_waits() -> bool:
    """Ask the thread pools loaded from now on to put idle threads to sleep; False if numpy or
    torch is already loaded (its pools keep the setting they read)."""
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    return "torch" not in sys.modules and "numpy" not in sys.modules
