"""torch's int8 GEMM (int8 x int8 -> int32, oneDNN) for exact products of 8-bit codes, and the
check that it sums exactly on this CPU. Used by the interpreter (`machine.py`) and by the
compiler's integer evaluation (arasc/ir/qops.py) and smoothing; kept apart from the numba
kernels (`kernels.py`) so that a compile does not import numba (0.1 GB and 0.1-0.3 s) for it.
"""
from __future__ import annotations

import contextlib
import functools
import sys

import numpy as np


def int8_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int32 a @ b of int8 matrices (any strides): torch._int_mm, oneDNN's int8 GEMM. Exact while
    no sum leaves int32: for inputs and weights less 128, K < 2^17. torch 2.13 misreads a
    matrix with a dimension of 1 whose strides are not the canonical ones (numpy calls such a view
    contiguous; the result is garbage), so such operands go in as fresh copies."""
    import torch  # only here: the interpreter imports torch only if it uses it (see int8_products_wanted)

    if 1 in a.shape or 1 in b.shape:
        a, b = np.array(a, order="C"), np.array(b, order="C")
    return torch._int_mm(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def int8_products_wanted() -> bool:
    """The default: int8 products when torch is already imported in this process (a compile, the
    benchmarks, the tests), float32 BLAS otherwise. Importing torch takes longer (1.5-3 s) than
    int8 products save over one ResNet-50 inference (about 0.1 s), so a plain `arasc run` keeps
    float32; Machine(int8=True) asks for int8 regardless."""
    return "torch" in sys.modules


@functools.cache
def int8_products_exact() -> bool:
    """Whether `int8_product` sums exactly on this CPU. An int8 GEMM without VNNI instructions may
    add pairs of products in int16 and saturate (oneDNN documents it for AVX2); the extreme
    operands below would show it. Checked once per process."""
    k = 1 << 12
    for x, w in ((-128, -128), (127, -128), (-128, 127), (127, 127)):
        a = np.full((32, k), x, np.int8)
        b = np.full((k, 32), w, np.int8)
        a[:, ::3] = -1 - a[:, ::3]     # mixed signs too: -128 <-> 127
        expected = a[:1].astype(np.int64) @ b[:, :1].astype(np.int64)
        try:
            if not np.array_equal(int8_product(a, b), np.broadcast_to(expected, (32, 32))):
                return False
        except RuntimeError:   # no int8 GEMM in this torch build
            return False
    return True


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread for the finite-ADC shortcuts' products (runtime/crossbar.py): many
    GEMMs of a few million multiply-adds each, where a second thread waits spinning more than it
    helps on this project's 2-core machine under other engineers' load (3-10x slower than one
    thread), as do OpenBLAS's threads beside torch's (numpy's float32 GEMMs of the old shortcuts
    took 8x their single-threaded time inside an inference)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def int8_bitline_sums(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """int32 values @ levels of int8 matrices (`int8_product`) on one thread: about 4x float32
    BLAS per thread on this project's CPUs (AVX-512 VNNI)."""
    with one_torch_thread():
        return int8_product(values, levels)


def float32_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of float32 matrices (any strides) by torch on one thread; the same numbers as numpy's
    where the shortcuts take it, exact integers below 2^24."""
    import torch

    with one_torch_thread():
        return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()
