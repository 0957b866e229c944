"""Cross-check arasc/tpu.py against SCALE-Sim (the simulator the paper used for its TPU-like
baseline, VII-E), layer by layer, on a few GEMMs taken from the measured models.

SCALE-Sim (PyPI `scalesim`) needs numpy < 2, which arasc's own environment does not have, so it
gets an environment of its own in the cache folder (`arasc reproduce --scalesim` creates it
once with `python -m venv` and pip). It runs there as a separate process on a GEMM topology
(name, M, N, K) and a configuration of Table I's array: 64 x 64, weight-stationary, 4.5 MB of
buffer split evenly among input, filter and output scratchpads, and 19 bytes a cycle of main
memory (19.2 GB/s at 1 GHz). Its COMPUTE_REPORT gives total and stall cycles per layer; the
compute cycles (total less stalls) are what `tpu.fold_cycles` models.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from .tpu import TpuConfig, fold_cycles

SCALESIM = "scalesim==3.0.0"
NUMPY = "numpy>=1.24,<2"


class ScaleSimError(RuntimeError):
    """SCALE-Sim could not be installed or run; the message says which step failed."""


CONFIG = """[general]
run_name = arasc_tpu

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
ifmapsramszkB = {third}
filtersramszkB = {third}
ofmapsramszkB = {third}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Bandwidth = {bandwidth}
Dataflow = ws
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
FilterCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40

[run_presets]
InterfaceBandwidth = USER
UseRamulatorTrace = False
"""


def environment(cache: Path) -> Path:
    """The python of SCALE-Sim's own environment, created on first use."""
    venv = cache / "scalesim-venv"
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import scalesim"], capture_output=True).returncode == 0:
        return python
    for step in ([sys.executable, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "--quiet", SCALESIM, NUMPY, "setuptools"]):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            raise ScaleSimError(f"creating SCALE-Sim's environment in {venv}: `{' '.join(step)}` failed: "
                                f"{done.stderr.strip()[-500:]}")
    return python


def sample_layers(measured: dict, per_model: int = 2, tpu: TpuConfig | None = None) -> list[dict]:
    """A few distinct GEMMs of the measured models: each model's largest and smallest crossbar layer
    by MACs, and one attention product. SCALE-Sim runs one M x K x N GEMM; a layer of several
    (attention's heads, a grouped convolution's groups: its compute cycles are that many folds
    counts) is compared by its cycles per GEMM."""
    tpu = tpu or TpuConfig()
    chosen, seen = [], set()
    for model, records in measured.items():
        full = next(r for r in records if "tpu" in r)
        gemms = [layer for layer in full["tpu"]["layers"] if layer["kind"] in ("gemm", "matmul")]
        gemms.sort(key=lambda layer: layer["m"] * layer["k"] * layer["n"])
        picks = [gemms[0], gemms[-1]][:per_model] + [layer for layer in gemms if layer["kind"] == "matmul"][:1]
        for layer in picks:
            key = (layer["m"], layer["k"], layer["n"])
            if key not in seen and layer["m"] * layer["k"] * layer["n"] <= 1e9:   # SCALE-Sim holds every cycle
                seen.add(key)
                gemms = layer["compute_cycles"] // fold_cycles(layer["m"], layer["k"], layer["n"], tpu)
                chosen.append({"name": f"{model}/{layer['name']}", "m": layer["m"], "k": layer["k"], "n": layer["n"],
                               "ours_with_memory": layer["cycles"] / gemms})
    return chosen


def cross_check(cache: Path, measured: dict, tpu: TpuConfig | None = None) -> dict:
    """SCALE-Sim's and arasc's compute cycles for a few layers of the measured models."""
    tpu = tpu or TpuConfig()
    python = environment(cache)
    work = cache / "scalesim-run"
    work.mkdir(parents=True, exist_ok=True)
    layers = sample_layers(measured, tpu=tpu)
    (work / "tpu.cfg").write_text(CONFIG.format(rows=tpu.rows, cols=tpu.cols, third=tpu.buffer_bytes // 3 // 1024,
                                                bandwidth=19))
    lines = ["Layer, M, N, K,"] + [f"l{i}, {x['m']}, {x['n']}, {x['k']}," for i, x in enumerate(layers)]
    (work / "gemm.csv").write_text("\n".join(lines) + "\n")
    (work / "layout.csv").write_text("Layer,\n")   # read, but unused without custom layouts
    run = subprocess.run([str(python), "-m", "scalesim.scale", "-c", "tpu.cfg", "-t", "gemm.csv", "-l", "layout.csv",
                          "-p", "out",
                          "-i", "gemm", "-s", "N"], cwd=work, capture_output=True, text=True)
    reports = sorted((work / "out").glob("**/COMPUTE_REPORT.csv"), key=lambda p: p.stat().st_mtime)
    if run.returncode or not reports:
        raise ScaleSimError(f"SCALE-Sim failed in {work}: {(run.stderr or run.stdout).strip()[-800:]}")
    with open(reports[-1]) as f:
        rows = [{k.strip(): v.strip() for k, v in row.items() if k} for row in csv.DictReader(f)]
    for layer, row in zip(layers, rows, strict=True):
        total, stalls = int(float(row["Total Cycles"])), int(float(row["Stall Cycles"]))
        layer.update(scalesim=total - stalls, scalesim_with_stalls=total,
                     ours=fold_cycles(layer["m"], layer["k"], layer["n"], tpu))
    return {"layers": layers, "scalesim": SCALESIM}
