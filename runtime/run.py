"""Load, verify and execute an `.aras` program: the runtime's entry point."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..isa.atomic import write_atomically
from ..isa.diagnostics import render_error
from ..isa.hardware import Hardware, bundled_hardware, check_interpretable, hardware_fingerprint, load_hardware
from ..isa.parser import ProgramError, parse_program
from ..isa.program import DTYPES, Program
from ..isa.weights import load_weights
from . import progress
from .machine import Machine, WriteStats
from .sfu import DataError
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
    adc_choice: str | None = None  # how `arasc run` chose the ADC: auto, chip, ideal or --adc-bits

    def save_output(self, path: str) -> None:
        """One output: a .npy of it; several: an .npz keyed by output name. Written atomically."""
        if len(self.outputs) == 1:
            write_atomically([(path, lambda f: np.save(f, next(iter(self.outputs.values()))))], "--output")
        else:
            write_atomically([(path, lambda f: np.savez(f, **self.outputs))], "--output")


def _read_array_file(input_path: str, program: Program) -> dict[str, np.ndarray]:
    """The arrays of an .npy (memory-mapped: a header's shape is checked before any data is read)
    or an .npz, by input name."""
    if not os.path.isfile(input_path):
        raise RuntimeInputError(f"--input {input_path}: no such file")
    try:
        data = np.load(input_path, mmap_mode="r", allow_pickle=False)
        if isinstance(data, np.ndarray):
            if len(program.inputs) != 1:
                raise RuntimeInputError(f"--input {input_path}: the program takes {len(program.inputs)} inputs "
                                        f"({', '.join(p.name for p in program.inputs)}); give an .npz keyed by name")
            return {program.inputs[0].name: data}
        with data:
            wanted = {port.name: port for port in program.inputs}
            return {name: data[name] for name in data.files if name in wanted}
    except RuntimeInputError:
        raise
    except Exception as err:  # numpy's reader raises many kinds on a damaged file: all are the file's fault
        raise RuntimeInputError(f"--input {input_path}: not a readable .npy/.npz array "
                                f"({type(err).__name__}: {err})") from None


def _as_port_type(port, x: np.ndarray, source: str) -> np.ndarray:
    """x as the .input declares it. Quantized (f32) ports take real numbers: NaN is refused,
    +-inf saturate like any value beyond the scale's range (docs/isa.md); integer ports take
    integers within their dtype's range."""
    where = f"{source}: input {port.name}"
    if tuple(x.shape) != port.type.shape:
        raise RuntimeInputError(f"{where}: shape {list(x.shape)}, the program expects "
                                f"{list(port.type.shape)} ({port.type})")
    if port.type.dtype == "f32":
        if x.dtype.kind not in "fiu":
            raise RuntimeInputError(f"{where}: dtype {x.dtype}, the program expects real numbers ({port.type})")
        x = np.asarray(x, np.float64 if x.dtype.kind == "f" and x.dtype.itemsize > 4 else None)
        if x.dtype.kind == "f" and np.isnan(x).any():
            raise RuntimeInputError(f"{where}: holds NaN, which has no quantized code")
        with np.errstate(over="ignore"):
            return np.asarray(x, np.float32)
    target = np.dtype(DTYPES[port.type.dtype])
    if x.dtype.kind not in "iu":
        raise RuntimeInputError(f"{where}: dtype {x.dtype}, the program expects integers ({port.type})")
    info = np.iinfo(target)
    if x.size and (int(x.min()) < info.min or int(x.max()) > info.max):
        raise RuntimeInputError(f"{where}: values {int(x.min())}..{int(x.max())} outside {port.type.dtype}'s "
                                f"{info.min}..{info.max}")
    return np.asarray(x, target)


def read_inputs(program: Program, weights: dict, input_path: str | None) -> dict[str, np.ndarray]:
    """The model inputs as a user gives them to PyTorch, checked against the program's .input."""
    if input_path is None:
        missing = [p.name for p in program.inputs if INPUT_PREFIX + p.name not in weights]
        if missing:
            raise RuntimeInputError(f"{program.weights[0]}: the program carries no example input for "
                                    f"{', '.join(missing)}; pass --input")
        given = {p.name: weights[INPUT_PREFIX + p.name] for p in program.inputs}
        source = f"{program.weights[0]}: the example input"
    else:
        given = _read_array_file(input_path, program)
        source = f"--input {input_path}"
    inputs = {}
    for port in program.inputs:
        if port.name not in given:
            raise RuntimeInputError(f"{source}: no value for input {port.name}")
        inputs[port.name] = _as_port_type(port, given[port.name], source)
    return inputs


def adc_bits_for(adc: str, adc_bits: int | None, hw: Hardware) -> int | None:
    """The ADC resolution a run models (None: ideal): adc_bits if given, else by `adc` (run_file)."""
    if adc_bits is None and (adc == "chip" or (adc == "auto" and hw.adc_reads_cells)):
        return hw.crossbar.adc_bits
    return adc_bits


def run_file(path: str, input_path: str | None = None, hw_path: str | None = None, inferences: int = 1,
             adc: str = "ideal", **machine_options) -> Result:
    """Load, verify and run a program `inferences` times on one machine; the last run is returned
    (with 2, its write pulses are the steady state: counted against the cells the first run left).
    `adc`, unless machine_options give adc_bits: "chip" models the hardware file's ADC, "ideal"
    none, "auto" the chip's where it reads the cells faithfully (`Hardware.adc_reads_cells`)."""
    program, weights, hw = load_program(path, hw_path)
    machine_options["adc_bits"] = adc_bits_for(adc, machine_options.get("adc_bits"), hw)
    if machine_options.get("adc_lsb", 1) != 1 and any(layer.attr("input_slice_bits", 1) > 1 for layer in program.layers):
        raise RuntimeInputError(f"{path}: --adc-lsb {machine_options['adc_lsb']}: the program's speculative input "
                                f"slicing (input_slice_bits) is modelled for an ADC of unit step only; drop --adc-lsb")
    inputs = read_inputs(program, weights, input_path)
    return run_loaded(program, weights, hw, inputs, path, input_path, inferences, **machine_options)


def run_loaded(program: Program, weights: dict, hw: Hardware, inputs: dict, path: str, input_path: str | None,
               inferences: int = 1, **machine_options) -> Result:
    """Run a verified program on checked inputs `inferences` times; the last run is returned."""
    try:
        result = execute(program, weights, hw, inputs, **machine_options)
        for _ in range(inferences - 1):
            result = execute(program, weights, hw, inputs, machine=result.machine)
    except DataError as err:  # what the input's values mean for the program, not the program itself
        given = f"--input {input_path}" if input_path else f"the example input in {program.weights[0]}"
        raise RuntimeInputError(f"{path}:{err.line}: {err} (from {given})") from None
    result.inference = inferences
    return result


def load_program(path: str | os.PathLike, hw_path: str | None = None) -> tuple[Program, dict, Hardware]:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise RuntimeInputError(f"{path}: cannot read the program ({err.strerror})") from None
    source = decode_program(data, path)
    program = parse_program(source, path)
    hw = load_hardware(hw_path) if hw_path else _bundled(program, path)
    if hardware_fingerprint(hw) != program.hw[1]:
        raise RuntimeInputError(f"{path}: compiled for hardware {program.hw[0]} sha256={program.hw[1][:12]}..., "
                                f"but the hardware given has sha256={hardware_fingerprint(hw)[:12]}...; "
                                f"recompile, or pass the matching --hw file")
    check_interpretable(hw, hw_path or f".hw {program.hw[0]}")
    weights = load_weights(program, path)
    Verifier(program, weights, hw, source, path).run()
    return program, weights, hw


def decode_program(data: bytes, path: str) -> str:
    """Program text is UTF-8: a byte that is not is reported at its line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[:err.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        text = data.decode("utf-8", errors="replace")
        raise ProgramError(render_error(text, path, line, column, f"byte 0x{data[err.start]:02x} is not UTF-8 "
                                        f"text")) from None


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
    timing = Timing(program, hw, costs=machine.timing_costs)
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
