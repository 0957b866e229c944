"""A TPU-like accelerator, the paper's second baseline (VII-E, Table I): an analytic model of a
weight-stationary systolic array, run over the same `.aras` program ARAS runs, layer by layer.

Table I: 32 nm, 1 GHz, 64 x 64 8-bit MACs, 4.5 MB of data buffer (activations and weights
together); VI: the same LPDDR4 main memory as ARAS, 19.2 GB/s. The paper modelled it with
SCALE-Sim [43]; this model follows SCALE-Sim's weight-stationary dataflow
(`scalesim/compute/systolic_compute_ws.py`) and is checked against it layer by layer
(`arasc/scalesim_check.py`):

- A layer is a GEMM of M windows x K inputs x N outputs (per group). Its weights are cut into
  ceil(K / rows) x ceil(N / cols) folds. A fold loads its weights (rows cycles), streams the M
  windows through the array skewed by one cycle per row and column, and drains:
  2 rows + cols + M - 2 cycles (`fold_cycles`).
- Every weight comes from main memory once per inference: no paper DNN fits 4.5 MB (VGG-16 has
  138 M weights), the reason ARAS exists. Activations stay in the buffer when a layer's input
  and output fit its activation part, and go through main memory otherwise. Transfers are
  double-buffered, so a layer takes max(compute, main-memory bytes / bandwidth).
- Attention's activation-by-activation products (`qmatmul`) are GEMMs on the same array; other
  `sfu` operations run on a vector unit as wide as ARAS's SFU (same `sfu_lanes`), as the TPU's
  vector unit beside its matrix unit; loads and stores at the main-memory bandwidth.

Energy, per access (docs/paper.md cites each): an 8-bit MAC 0.2 pJ multiply + 0.1 pJ 32-bit add
at 45 nm (Horowitz, ISSCC 2014), 0.21 pJ at 32 nm; a `qmatmul`'s MACs at the ARAS chip's
`j_per_mac` (int16 operands); buffer bytes at ARAS's `gbuffer_access_j_per_byte`; main-memory
bytes at its `main_memory_j_per_byte`; the buffer's leakage at `gbuffer_static_w_per_kib` for
the whole inference (one buffer, nothing to power-gate). The array's own leakage is left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .isa.hardware import Hardware
from .isa.program import Program
from .isa.tiling import matrix_shape

MAC_J_45NM = 0.2e-12 + 0.1e-12     # Horowitz ISSCC 2014: 8-bit multiply + 32-bit add, 45 nm


@dataclass(frozen=True)
class TpuConfig:
    """Table I's TPU-like accelerator; memory and energy per access from the ARAS chip's file."""
    rows: int = 64
    cols: int = 64
    buffer_bytes: int = 4_718_592            # 4.5 MB: activation and weight buffers together
    weight_buffer_bytes: int = 2 * 64 * 64 * 64   # double-buffered folds, with room: the rest holds activations
    clock_hz: float = 1e9
    mac_j: float = MAC_J_45NM * 32 / 45      # scaled 45 -> 32 nm as docs/energy.md does


@dataclass
class TpuLayer:
    name: str
    kind: str            # "gemm" (a crossbar layer), "matmul" (attention), "vector", "transfer"
    m: int = 0
    k: int = 0
    n: int = 0
    compute_cycles: int = 0
    memory_bytes: int = 0
    cycles: int = 0


@dataclass
class TpuResult:
    layers: list[TpuLayer] = field(default_factory=list)
    cycles: int = 0
    energy: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.cycles / 1e9


def fold_cycles(m: int, k: int, n: int, tpu: TpuConfig) -> int:
    """SCALE-Sim's weight-stationary compute cycles of an M x K x N GEMM (no memory stalls): each
    fold loads, streams and drains in 2 rows + cols + M - 2 cycles, and SCALE-Sim counts the
    whole run one cycle shorter (its cycles are its demand matrix's rows + columns - 1). Equal to
    SCALE-Sim 3.0.0's count on every layer cross-checked (docs/paper.md)."""
    folds = math.ceil(k / tpu.rows) * math.ceil(n / tpu.cols)
    return folds * (2 * tpu.rows + tpu.cols + m - 2) - 1


def simulate(program: Program, hw: Hardware, tpu: TpuConfig | None = None) -> TpuResult:
    """One inference of `program`'s network on the TPU-like accelerator."""
    tpu = tpu or TpuConfig()
    types = {i["out"]: i["type"] for i in program.compute if i.opcode in ("load", "mvm", "sfu")}
    bytes_per_cycle = hw.memory.bandwidth_bytes_per_s / tpu.clock_hz
    activation_room = tpu.buffer_bytes - tpu.weight_buffer_bytes
    result = TpuResult()
    macs = matmul_macs = buffer_bytes = memory_bytes = 0
    seen = set()
    for instr in program.compute:
        if instr.opcode == "mvm":
            if instr["layer"] in seen:
                continue   # a layer's later segments: the GEMM is counted whole once
            seen.add(instr["layer"])
            layer = program.layer(instr["layer"])
            groups = layer.attr("groups", 1)
            k, n = matrix_shape(layer.weight("weight")[1].shape, groups)
            out = instr["type"]
            m = math.prod(out.shape) // (groups * n)   # windows: output positions, or tokens
            in_bytes, out_bytes = types[instr["input"]].nbytes, out.nbytes
            traffic = groups * k * n + (in_bytes + out_bytes if in_bytes + out_bytes > activation_room else 0)
            compute = groups * fold_cycles(m, k, n, tpu)
            entry = TpuLayer(layer.name, "gemm", m, k, n, compute, traffic)
            macs += groups * m * k * n
            buffer_bytes += groups * (m * k * math.ceil(n / tpu.cols) + k * n + m * n * (2 * math.ceil(k / tpu.rows) - 1))
        elif instr.opcode == "sfu" and instr["op"] == "qmatmul":
            a, out = types[instr["inputs"][0]], instr["type"]
            k, n = a.shape[-1], out.shape[-1]
            m = out.shape[-2]
            batch = math.prod(out.shape[:-2])
            entry = TpuLayer(instr["out"], "matmul", m, k, n, batch * fold_cycles(m, k, n, tpu), 0)
            matmul_macs += batch * m * k * n
            buffer_bytes += sum(types[x].nbytes for x in instr["inputs"]) + out.nbytes
        elif instr.opcode == "sfu":
            elements = math.prod(instr["type"].shape)
            cycles = math.ceil(elements / hw.latency.sfu_lanes) * hw.latency.sfu_cycles_per_vector
            entry = TpuLayer(instr["out"], "vector", compute_cycles=cycles)
            buffer_bytes += sum(types[x].nbytes for x in instr["inputs"]) + instr["type"].nbytes
        elif instr.opcode in ("load", "store"):
            nbytes = instr["type"].nbytes if instr.opcode == "load" else types[instr["value"]].nbytes
            entry = TpuLayer(instr["port"], "transfer", memory_bytes=nbytes)
        else:
            continue
        entry.cycles = max(entry.compute_cycles, math.ceil(entry.memory_bytes / bytes_per_cycle))
        memory_bytes += entry.memory_bytes
        result.layers.append(entry)
    result.cycles = sum(entry.cycles for entry in result.layers)
    e = hw.energy
    seconds = result.cycles / tpu.clock_hz
    result.energy = {
        "compute": macs * tpu.mac_j + matmul_macs * hw.matmul.j_per_mac,
        "memory": memory_bytes * e.main_memory_j_per_byte + buffer_bytes * e.gbuffer_access_j_per_byte,
        "static": tpu.buffer_bytes / 1024 * e.gbuffer_static_w_per_kib * seconds,
        "write": 0.0,
    }
    result.energy["total"] = sum(result.energy.values())
    return result
