"""The binary side file of a program: named integer tensors in safetensors format
(a JSON header plus raw little-endian bytes: no pickle, deterministic bytes, memory-mappable),
referenced from the text by name and checked by sha256."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import numpy as np
from safetensors.numpy import load_file, save

from .program import Program


class WeightFileError(ValueError):
    pass


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_bytes(tensors: Mapping[str, np.ndarray]) -> bytes:
    """Serialise deterministically: safetensors sorts names and fixes the layout."""
    return save({name: np.ascontiguousarray(array) for name, array in tensors.items()})


def resolve_weight_path(program: Program, program_path: str | os.PathLike) -> str:
    """The weight file named in `.weights`, relative to the program's own folder."""
    return os.path.join(os.path.dirname(os.path.abspath(program_path)), program.weights[0])


def load_weights(program: Program, program_path: str | os.PathLike, check: bool = True) -> dict[str, np.ndarray]:
    path = resolve_weight_path(program, program_path)
    if not os.path.isfile(path):
        raise WeightFileError(f"{program_path}: weight file {program.weights[0]} (from .weights) not found at {path}")
    if check:
        actual = sha256_file(path)
        if actual != program.weights[1]:
            raise WeightFileError(f"{program_path}: checksum mismatch for {program.weights[0]}: .weights says "
                                  f"sha256={program.weights[1]}, the file has sha256={actual}")
    try:
        return load_file(path)
    except Exception as err:
        raise WeightFileError(f"{path}: not a readable safetensors weight file ({err})") from None
