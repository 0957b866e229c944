"""Load, verify and execute an `.aras` program: the runtime's entry point."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..isa.hardware import Hardware, bundled_hardware, hardware_fingerprint, load_hardware
from ..isa.parser import parse_program
from ..isa.program import Program
from ..isa.weights import load_weights
from . import progress
from .machine import Machine, WriteStats
from .timing import Timing
from .verify import Verifier


class RuntimeInputError(ValueError):
    """Bad program, weights, hardware or input: reported with exit status 2."""


INPUT_PREFIX = "input:"  # example inputs stored in the weight file by the compiler


@dataclass
class Result:
    program: Program
    outputs: dict[str, np.ndarray]
    machine: Machine
    timing: Timing
    inference: int = 1
    adc_error: dict | None = None  # per output, against an ideal ADC (set when a finite ADC ran)

    def save_output(self, path: str) -> None:
        """One output: a .npy of it; several: an .npz keyed by output name. Written atomically."""
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            if len(self.outputs) == 1:
                np.save(f, next(iter(self.outputs.values())))
            else:
                np.savez(f, **self.outputs)
        os.replace(tmp, path)


def read_inputs(program: Program, weights: dict, input_path: str | None) -> dict[str, np.ndarray]:
    """The model inputs as a user gives them to PyTorch, checked against the program's .input."""
    if input_path is None:
        missing = [p.name for p in program.inputs if INPUT_PREFIX + p.name not in weights]
        if missing:
            raise RuntimeInputError(f"the program carries no example input for {missing}; pass --input")
        given = {p.name: weights[INPUT_PREFIX + p.name] for p in program.inputs}
    else:
        try:
            data = np.load(input_path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise RuntimeInputError(f"{input_path}: not a readable .npy/.npz array ({err})") from None
        if isinstance(data, np.ndarray):
            if len(program.inputs) != 1:
                raise RuntimeInputError(f"{input_path}: the program takes {len(program.inputs)} inputs "
                                        f"({', '.join(p.name for p in program.inputs)}); give an .npz keyed by name")
            given = {program.inputs[0].name: data}
        else:
            given = {name: data[name] for name in data.files}
    for port in program.inputs:
        if port.name not in given:
            raise RuntimeInputError(f"no value for input {port.name}")
        x = given[port.name]
        if tuple(x.shape) != port.type.shape:
            raise RuntimeInputError(f"input {port.name}: shape {list(x.shape)}, the program expects "
                                    f"{list(port.type.shape)} ({port.type})")
        kind = "f" if port.type.dtype == "f32" else "i"
        if x.dtype.kind not in (kind, "u" if kind == "i" else kind):
            raise RuntimeInputError(f"input {port.name}: dtype {x.dtype}, the program expects {port.type.dtype}")
    return {p.name: given[p.name].astype(np.float32 if p.type.dtype == "f32" else np.int64) for p in program.inputs}


def run_file(path: str, input_path: str | None = None, hw_path: str | None = None, inferences: int = 1,
             **machine_options) -> Result:
    """Load, verify and run a program `inferences` times on one machine; the last run is returned
    (with 2, its write pulses are the steady state: counted against the cells the first run left)."""
    program, weights, hw = load_program(path, hw_path)
    inputs = read_inputs(program, weights, input_path)
    result = execute(program, weights, hw, inputs, **machine_options)
    for _ in range(inferences - 1):
        result = execute(program, weights, hw, inputs, machine=result.machine)
    result.inference = inferences
    return result


def load_program(path: str | os.PathLike, hw_path: str | None = None) -> tuple[Program, dict, Hardware]:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as err:
        raise RuntimeInputError(f"{path}: cannot read the program ({err.strerror})") from None
    program = parse_program(source, path)
    hw = load_hardware(hw_path) if hw_path else _bundled(program, path)
    if hardware_fingerprint(hw) != program.hw[1]:
        raise RuntimeInputError(f"{path}: compiled for hardware {program.hw[0]} sha256={program.hw[1][:12]}..., "
                                f"but the hardware given has sha256={hardware_fingerprint(hw)[:12]}...; "
                                f"recompile, or pass the matching --hw file")
    weights = load_weights(program, path)
    Verifier(program, weights, hw, source, path).run()
    return program, weights, hw


def _bundled(program: Program, path: str) -> Hardware:
    try:
        return bundled_hardware(program.hw[0])
    except Exception:
        raise RuntimeInputError(f"{path}: .hw {program.hw[0]} is not a bundled hardware description; "
                                f"pass its file with --hw") from None


def execute(program: Program, weights: dict, hw: Hardware, inputs: dict[str, np.ndarray],
            machine: Machine | None = None, **machine_options) -> Result:
    """Run both streams to completion in an order their tokens allow, timing every instruction.
    Pass the `machine` of an earlier run to start from the crossbar contents it left (steady state)."""
    machine = machine or Machine(program, weights, hw, **machine_options)
    machine.inputs = inputs
    machine.outputs = {}
    machine.writes = WriteStats()
    timing = Timing(program, hw)
    progress.stage("run", total=len(program.compute))
    streams = {"write": list(program.write), "compute": list(program.compute)}
    pc = {"write": 0, "compute": 0}
    raised: set[str] = set()
    while any(pc[s] < len(streams[s]) for s in streams):
        progressed = False
        for s in ("write", "compute"):
            while pc[s] < len(streams[s]):
                instr = streams[s][pc[s]]
                if instr.opcode == "wait" and instr["token"] not in raised:
                    break
                if instr.opcode == "wr":  # a run of writes executes as one vectorised batch
                    end = pc[s]
                    while end < len(streams[s]) and streams[s][end].opcode == "wr":
                        end += 1
                    machine.write_blocks(streams[s][pc[s]:end])
                    for write in streams[s][pc[s]:end]:
                        timing.record(s, write, machine)
                    pc[s] = end
                    progressed = True
                    continue
                machine.execute(instr)
                timing.record(s, instr, machine)
                if s == "compute" and progress.showing():
                    progress.step(f"{instr.opcode} {dict(instr.args).get('out', '')}")
                if instr.opcode == "signal":
                    raised.add(instr["token"])
                pc[s] += 1
                progressed = True
                if s == "write" and instr.opcode == "signal":
                    break  # let compute use what was just written before writing on
        if not progressed:
            raise RuntimeError("deadlock the verifier did not catch")
    timing.finish(machine)
    return Result(program, machine.outputs, machine, timing)
