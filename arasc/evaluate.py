"""`arasc evaluate PROG.aras --dataset DIR|FILE.npz`: a task metric of a compiled program over a
data set, on the interpreter-simulator, split into tasks that run on Ray (docs/sweeps.md).

A data set is an .npz, or a folder of .npz shards read in name order and joined. It holds the
inputs, one sample per row, keyed by the program's input names (`x` also names the input of a
one-input program), and what to score the program's output against:

- `labels`: integer classes, one per sample: top-1 and top-5 accuracy of the output's logits;
- `targets`: reference outputs, one per sample: the cosine of each sample's output to its target
  (mean and lowest), for encoders and other non-classifiers.

The program runs in batches of the batch size it was traced at; a last, partial batch is padded
with copies of its last sample, whose outputs are dropped. Tasks receive the program's bytes and
the inputs through Ray's object store, so cluster nodes need no shared file system.

The accuracy issue reports the digits CNNs' top-1 on scikit-learn's digits test split
(docs/results.md); `scripts/digits_dataset.py` writes that split in this format."""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

import numpy as np


class DatasetError(ValueError):
    """A data set that cannot score the program: names the file and the array (exit 2)."""


@dataclass(frozen=True)
class Dataset:
    source: str
    inputs: dict[str, np.ndarray]  # by the program's input name, one sample per row
    labels: np.ndarray | None
    targets: np.ndarray | None

    @property
    def size(self) -> int:
        return len(next(iter(self.inputs.values())))


def load_dataset(path: str, ports, limit: int | None = None) -> Dataset:
    """The data set at `path` for a program with input `ports` (name and [batch, ...] shape); its
    first `limit` samples if given."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".npz"))
        if not files:
            raise DatasetError(f"--dataset {path}: a folder without .npz files")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise DatasetError(f"--dataset {path}: no such file or folder")
    shards = [_read_shard(f, ports) for f in files]
    keys = set(shards[0])
    for f, shard in zip(files[1:], shards[1:]):
        if set(shard) != keys:
            raise DatasetError(f"--dataset {f}: holds {', '.join(sorted(shard))}, but {files[0]} holds "
                               f"{', '.join(sorted(keys))}")
    joined = {k: np.concatenate([s[k] for s in shards]) if len(shards) > 1 else shards[0][k] for k in keys}
    if limit is not None:
        joined = {k: v[:limit] for k, v in joined.items()}
    names = [p.name for p in ports]
    return Dataset(path, {n: joined[n] for n in names}, joined.get("labels"), joined.get("targets"))


def _read_shard(path: str, ports) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise DatasetError(f"--dataset {path}: an .npy array; a data set is an .npz of inputs and labels "
                                   f"or targets")
            arrays = {k: data[k] for k in data.files}
    except DatasetError:
        raise
    except Exception as err:  # numpy raises many kinds on a damaged file
        raise DatasetError(f"--dataset {path}: not a readable .npz ({type(err).__name__}: {err})") from None
    if len(ports) == 1 and ports[0].name not in arrays and "x" in arrays:
        arrays[ports[0].name] = arrays.pop("x")
    shard = {}
    for port in ports:
        if port.name not in arrays:
            raise DatasetError(f"--dataset {path}: no array {port.name!r} (the program's input"
                               f"{'; x also names it' if len(ports) == 1 else ''}); it holds "
                               f"{', '.join(sorted(arrays)) or 'nothing'}")
        x = arrays[port.name]
        want = tuple(port.type.shape[1:])
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want or x.dtype.kind not in "fiub":
            raise DatasetError(f"--dataset {path}: {port.name}: shape {list(x.shape)} {x.dtype}, expected numbers "
                               f"of shape [N, {', '.join(map(str, want))}] (the program's input {port.type})")
        shard[port.name] = x
    if "labels" not in arrays and "targets" not in arrays:
        raise DatasetError(f"--dataset {path}: no `labels` (classes, for top-1/top-5) or `targets` (reference "
                           f"outputs, for cosine); it holds {', '.join(sorted(arrays))}")
    n = {len(v) for v in shard.values()}
    if "labels" in arrays:
        labels = arrays["labels"]
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DatasetError(f"--dataset {path}: labels: shape {list(labels.shape)} {labels.dtype}, expected one "
                               f"integer class per sample")
        shard["labels"] = labels
    if "targets" in arrays:
        if arrays["targets"].dtype.kind not in "fiu":
            raise DatasetError(f"--dataset {path}: targets: {arrays['targets'].dtype}, expected numbers")
        shard["targets"] = arrays["targets"]
    n |= {len(shard[k]) for k in ("labels", "targets") if k in shard}
    if len(n) != 1 or 0 in n:
        raise DatasetError(f"--dataset {path}: the arrays hold different numbers of samples, or none "
                           f"({', '.join(f'{k}: {len(v)}' for k, v in shard.items())})")
    return shard


def check_outputs(dataset: Dataset, output_shape: tuple[int, ...]) -> None:
    """Labels need logits [batch, classes]; targets the output's per-sample shape."""
    if dataset.labels is not None:
        if len(output_shape) != 2:
            raise DatasetError(f"--dataset {dataset.source}: labels score logits of shape [batch, classes]; the "
                               f"program's output has shape {list(output_shape)} (give targets instead)")
        if dataset.labels.size and (dataset.labels.min() < 0 or dataset.labels.max() >= output_shape[1]):
            raise DatasetError(f"--dataset {dataset.source}: labels {dataset.labels.min()}..{dataset.labels.max()} "
                               f"outside the program's {output_shape[1]} classes")
    if dataset.targets is not None and tuple(dataset.targets.shape[1:]) != tuple(output_shape[1:]):
        raise DatasetError(f"--dataset {dataset.source}: targets of shape {list(dataset.targets.shape)}, the "
                           f"program's output is {list(output_shape)} per batch")


def metrics(outputs: np.ndarray, dataset: Dataset) -> dict[str, float]:
    """top1/top5 against the labels, cosine_mean/cosine_min against the targets."""
    result: dict[str, float] = {}
    if dataset.labels is not None:
        result.update(classification(outputs, dataset.labels[:len(outputs)]))
    if dataset.targets is not None:
        result.update(similarity(outputs, dataset.targets[:len(outputs)]))
    return result


def classification(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Fraction of samples whose label has the highest logit, and is among the five highest (ties
    go to the lower class, as argmax does)."""
    logits = np.asarray(logits, np.float64)
    order = np.argsort(-logits, axis=1, kind="stable")
    result = {"top1": float(np.mean(order[:, 0] == labels))}
    if logits.shape[1] >= 5:
        result["top5"] = float(np.mean((order[:, :5] == labels[:, None]).any(axis=1)))
    return result


def similarity(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    a = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    b = np.asarray(targets, np.float64).reshape(len(targets), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1), (norms == 0).astype(float))
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


@dataclass(frozen=True)
class PackedProgram:
    """A program as bytes, to ship to a task on any node: its text, weights and chip."""

    text: bytes
    weights: bytes
    weights_name: str
    hardware: bytes | None  # a --hw file's text; None: the bundled chip the program names

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text + self.weights + (self.hardware or b"")).hexdigest()


def pack_program(path: str, hw_path: str | None) -> PackedProgram:
    from .runtime.run import load_program

    program, _, _ = load_program(path, hw_path)  # checked here, so that a bad program fails before any task
    from .isa.weights import resolve_weight_path

    with open(path, "rb") as f:
        text = f.read()
    with open(resolve_weight_path(program, path), "rb") as f:
        weights = f.read()
    hardware = None
    if hw_path:
        with open(hw_path, "rb") as f:
            hardware = f.read()
    return PackedProgram(text, weights, program.weights[0], hardware)


_loaded: dict[str, tuple] = {}  # per worker process: the last program unpacked, by digest


def unpack_program(packed: PackedProgram):
    """(program, weights, hw), verified once per worker process."""
    from .runtime.run import load_program

    if packed.digest not in _loaded:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "program.aras")
            with open(path, "wb") as f:
                f.write(packed.text)
            with open(os.path.join(folder, packed.weights_name), "wb") as f:
                f.write(packed.weights)
            hw_path = None
            if packed.hardware is not None:
                hw_path = os.path.join(folder, "hardware.toml")
                with open(hw_path, "wb") as f:
                    f.write(packed.hardware)
            _loaded.clear()
            _loaded[packed.digest] = load_program(path, hw_path)
    return _loaded[packed.digest]


def run_samples(program, weights, hw, inputs: dict[str, np.ndarray], start: int, stop: int,
                adc_bits: int | None = None) -> np.ndarray:
    """The program's output for samples start..stop, in batches of its traced batch size."""
    from .runtime.run import _as_port_type, execute

    batch = program.inputs[0].type.shape[0]
    outputs, machine = [], None
    for first in range(start, stop, batch):
        real = min(batch, stop - first)
        given = {}
        for port in program.inputs:
            x = np.asarray(inputs[port.name][first:first + real])
            if real < batch:  # pad with the last sample; its outputs are dropped below
                x = np.concatenate([x, np.repeat(x[-1:], batch - real, axis=0)])
            given[port.name] = _as_port_type(port, x, f"samples {first}..{first + real - 1}")
        result = execute(program, weights, hw, given, machine=machine, adc_bits=adc_bits)  # options: first batch
        machine = result.machine
        (output,) = result.outputs.values()
        outputs.append(output[:real])
    return np.concatenate(outputs)


def evaluate_range(packed: PackedProgram, inputs: dict[str, np.ndarray], start: int, stop: int,
                   adc_bits: int | None) -> np.ndarray:
    """One task: the outputs of samples start..stop."""
    program, weights, hw = unpack_program(packed)
    return run_samples(program, weights, hw, inputs, start, stop, adc_bits)


def ranges(n: int, batch: int, tasks: int) -> list[tuple[int, int]]:
    """n samples cut into about `tasks` ranges of whole batches."""
    batches = -(-n // batch)
    per_task = max(1, -(-batches // max(tasks, 1)))
    return [(first * batch, min(n, (first + per_task) * batch)) for first in range(0, batches, per_task)]


def float_outputs(model: str, dataset: Dataset, batch: int) -> np.ndarray:
    """The float PyTorch model's outputs on the data set (--compare-float MODEL)."""
    import torch

    from .loader import load_source

    source = load_source(model)
    module = source.module.module() if isinstance(source.module, torch.export.ExportedProgram) else source.module
    if len(source.example_inputs) != len(dataset.inputs):
        raise DatasetError(f"--compare-float {model}: the model takes {len(source.example_inputs)} inputs, the "
                           f"program {len(dataset.inputs)}")
    arrays = list(dataset.inputs.values())
    outputs = []
    with torch.no_grad():
        for first in range(0, dataset.size, batch):
            out = module(*(torch.from_numpy(np.ascontiguousarray(x[first:first + batch])) for x in arrays))
            outputs.append((out[0] if isinstance(out, (tuple, list)) else out).numpy())
    return np.concatenate(outputs)
