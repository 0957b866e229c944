"""The wait policy of the thread pools of a compile and a run (issue 15): idle threads sleep at once.

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

The interpreter mixes the same pools: numpy's float32 products (the products of a plain `arasc
run`, which does not load torch) and numba's parallel loops (im2col, block writes,
requantization). Without torch, ResNet-50's steady-state inference took 0.15-0.17 s with the
default policies, 0.12 s with both set (numba's loops serial, before the eighth session:
0.12-0.13 s). So every `arasc` command sets both (`passive_waits`, in `cli.main`).

A runtime reads its setting when it loads, so these are set before numpy and torch are
imported; a value the user set is kept. The interpreter's benchmarks time PyTorch beside the
interpreter and shorten only OpenBLAS's spin (`short_blas_waits`): PyTorch's own inference,
whose threads wait for each other in quick succession, measured 0.054 s with OpenMP's default
policy and 0.072 s with PASSIVE."""
from __future__ import annotations

import os
import sys

BLAS_SETTINGS = {"OPENBLAS_THREAD_TIMEOUT": "4"}
OPENMP_SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE"}


def short_blas_waits() -> bool:
    """Ask OpenBLAS, if loaded from now on, to put idle threads to sleep; False if numpy is
    already loaded (its OpenBLAS keeps the setting it read)."""
    for name, value in BLAS_SETTINGS.items():
        os.environ.setdefault(name, value)
    return "numpy" not in sys.modules


def passive_waits() -> bool:
    """Ask the thread pools loaded from now on, OpenMP's and OpenBLAS's, to put idle threads to
    sleep; False if numpy or torch is already loaded (its pools keep the setting they read)."""
    for name, value in OPENMP_SETTINGS.items():
        os.environ.setdefault(name, value)
    return short_blas_waits() and "torch" not in sys.modules
