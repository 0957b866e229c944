"""RAELLA's adaptive weight slicing (arasc/passes/weight_slicing.py, docs/adc.md): a layer's
`weight_slice_bits` narrower than the chip's cells.

- one-bit slices on every layer of a 2-bit-cell chip are the 1-bit-cell chip: outputs through the
  6-bit ADC, cycles, write pulses, conversions and energy, on a chip small enough to rewrite its
  rows every inference (the chip-wide slicing is the second implementation);
- any per-layer mix is bit-exact with the integer reference under an ideal ADC;
- the write pulses of a mix, where rows change slicing, equal a replay of the `wr` stream over
  cell levels made by `isa.tiling.to_cells`;
- the pass's ADC error equals the one the exhaustive bit-serial emulation gives, and `auto`
  keeps the wide slicing exactly where it fits the budget;
- user errors: a slicing the chip cannot hold, in the options and in an `.aras` program.
"""
import dataclasses
import json
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.cli import main
from arasc.compile import compile_model, compile_quantized, weights_name, write_compiled
from arasc.ir import evaluate
from arasc.isa.hardware import bundled_hardware, dumps_hardware, loads_hardware
from arasc.isa.tiling import (
    OFFSET_CENTER,
    UNUSED,
    cell_levels,
    layer_hardware,
    matrix_shape,
    slice_levels,
    to_cells,
    weight_matrix,
)
from arasc.options import CompileOptions
from arasc.passes.tile import is_crossbar_layer
from arasc.passes.weight_slicing import WeightSlicing, WeightSlicingError, adc_error, choose_slicing
from arasc.runtime.crossbar import BitSerial
from arasc.runtime.run import run_file

from conftest import built, lowered

TWO_BIT = bundled_hardware("aras-differential")


def tiny(cell_bits: int):
    """aras-differential with 10 APU rows of two 32 x 64-cell crossbars: bert-base-small's 64 x 64
    layers take 8 blocks at 2-bit slices, 16 at 1-bit, so rows are rewritten every inference."""
    hw = TWO_BIT
    small = dataclasses.replace(hw, chip=dataclasses.replace(hw.chip, name=f"tiny-{cell_bits}", pes=1,
                                                             apu_rows_per_pe=10, apus_per_row=2),
                                crossbar=dataclasses.replace(hw.crossbar, rows=32, cols_cells=64, cell_bits=cell_bits))
    return loads_hardware(dumps_hardware(small))


def written(folder, hw, model_or_lowered, options, inputs, quantized=False):
    """Compile (from a lowered model, or the stages after quantize), write, and return (result, paths)."""
    path = f"{folder}/m.aras"
    compile_ = compile_quantized if quantized else compile_model
    result = compile_(model_or_lowered, hw, [inputs], inputs, weights_name(path), options)
    write_compiled(result, path)
    hw_path = f"{folder}/hw.toml"
    with open(hw_path, "w") as f:
        f.write(dumps_hardware(hw))
    return result, path, hw_path


def test_one_bit_slices_on_two_bit_cells_are_the_one_bit_chip():
    _, inputs = built("bert-base-small")
    runs = {}
    for cells, slicing in ((2, 1), (1, "chip")):
        folder = tempfile.mkdtemp(prefix="arasc-slicing-")
        options = CompileOptions(weight_slice_bits=slicing)
        result, path, hw_path = written(folder, tiny(cells), lowered("bert-base-small"), options, inputs)
        layers = [layer for layer in result.model.graph.layers if is_crossbar_layer(layer)]
        assert {layer.attr("weight_slice_bits") for layer in layers} == ({1} if cells == 2 else {None})
        runs[cells] = run_file(path, hw_path=hw_path, inferences=2, adc_bits=6)
    sliced, chip = runs[2], runs[1]
    assert sliced.machine.writes.blocks > 10    # the chip's 10 rows were rewritten
    for got, want in zip(sliced.outputs.values(), chip.outputs.values(), strict=True):
        assert np.array_equal(got, want)
    assert dataclasses.asdict(sliced.machine.writes) == dataclasses.asdict(chip.machine.writes)
    assert sliced.timing.cycles == chip.timing.cycles
    assert sliced.timing.adc_conversions == chip.timing.adc_conversions
    assert (sliced.machine.bit_serial.samples, sliced.machine.bit_serial.clipped) == \
        (chip.machine.bit_serial.samples, chip.machine.bit_serial.clipped)
    assert sliced.timing.energy == chip.timing.energy


def resliced(model, widths: dict[str, int], hw):
    """The model with the given per-layer slicing (the pass's own attribute rule)."""
    layers = []
    for layer in model.graph.layers:
        attrs = {k: v for k, v in dict(layer.attrs).items() if k != "weight_slice_bits"}
        if layer.name in widths and widths[layer.name] != hw.crossbar.cell_bits:
            attrs["weight_slice_bits"] = widths[layer.name]
        layers.append(dataclasses.replace(layer, attrs=tuple(attrs.items())))
    return model.replace(graph=dataclasses.replace(model.graph, layers=tuple(layers)))


def replayed_pulses(run, hw) -> int:
    """Write pulses of the second of two runs of the `wr` stream on a fresh chip, from cell levels
    made by `to_cells`: a write at the slicing a row holds moves the cells of its block's weights;
    at another slicing every cell of the row, the unused ones to level 0."""
    apu_rows = hw.apu_rows
    levels = np.zeros((apu_rows, hw.crossbar.rows, hw.chip.apus_per_row * hw.crossbar.cols_cells), np.int64)
    slicing = [0] * apu_rows
    layers = {layer.name: layer for layer in run.program.layers}
    cells_of: dict[str, np.ndarray] = {}
    for _ in range(2):   # the run reports the second inference, from the cells the first left
        pulses = 0
        for instr in run.program.write:
            if instr.opcode != "wr":
                continue
            layer = layers[instr["layer"]]
            own = layer_hardware(hw, layer)
            if layer.name not in cells_of:
                codes = run.machine.w[layer.weight("weight")[0]]
                blocks = [to_cells(matrix, own) for matrix in weight_matrix(codes, dict(layer.attrs))]
                cells_of[layer.name] = np.concatenate(blocks)   # [blocks, crossbars, rows, cells]
            block = cells_of[layer.name][instr["block"]]
            new = block.transpose(1, 0, 2).reshape(hw.crossbar.rows, -1).astype(np.int64)   # crossbar-major cells
            for row in instr["rows"]:
                bits = own.crossbar.cell_bits
                if slicing[row] in (0, bits):
                    target = np.where(new == UNUSED, levels[row], new)
                else:
                    target = np.where(new == UNUSED, 0, new)
                pulses += int(np.abs(target - levels[row]).sum())
                levels[row], slicing[row] = target, bits
    return pulses


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16), name=st.sampled_from(["bert-base-small", "digits-cnn"]))
def test_a_mix_of_slicings_is_exact_and_counts_every_cell_it_writes(seed, name):
    _, inputs = built(name)   # digits-cnn's layers leave partial blocks, whose empty cells a reslicing resets
    hw = tiny(2)
    folder = tempfile.mkdtemp(prefix="arasc-slicing-")
    options = CompileOptions(weight_center=None)
    first, _, _ = written(folder, hw, lowered(name), options, inputs)
    rng = np.random.default_rng(seed)
    names = [layer.name for layer in first.model.graph.layers if is_crossbar_layer(layer)]
    widths = {name: int(rng.integers(1, 3)) for name in names}
    inputs = tuple(np.asarray(x) for x in inputs)
    result, path, hw_path = written(folder, hw, resliced(first.model, widths, hw), options, inputs, quantized=True)
    run = run_file(path, hw_path=hw_path, inferences=2)
    reference = [t.numpy() for t in evaluate(result.model, inputs)]
    for got, want in zip(run.outputs.values(), reference, strict=True):
        assert np.array_equal(got, want)
    assert run.machine.writes.pulses == replayed_pulses(run, hw)
    # through the 6-bit ADC, the shortcut equals the sample-by-sample emulation at each layer's slicing
    short, full = (run_file(path, hw_path=hw_path, adc_bits=6, bit_serial=exhaustive) for exhaustive in (False, True))
    for got, want in zip(short.outputs.values(), full.outputs.values(), strict=True):
        assert np.array_equal(got, want)
    assert (short.machine.bit_serial.clipped, short.machine.bit_serial.samples) == \
        (full.machine.bit_serial.clipped, full.machine.bit_serial.samples)
    for layer in result.model.graph.layers:   # blocks of 32 rows x 16 weights at 2-bit slices, x 8 at 1-bit
        if is_crossbar_layer(layer):
            k, n = matrix_shape(layer.weight("weight").type.shape, layer.attr("groups", 1))
            assert layer.attr("apu_rows") == -(-k // 32) * -(-n // (8 * widths[layer.name]))


def exhaustive_error(windows, codes, x_zp, w_zp, hw) -> float:
    """`adc_error` by the sample-by-sample emulation (`BitSerial.product`), K-chunk by K-chunk."""
    serial = BitSerial(8, hw.crossbar.cell_bits, hw.slices_per_weight, hw.crossbar.adc_bits, signed=True)
    matrix = weight_matrix(codes, {})[0]
    read = np.zeros((len(windows), matrix.shape[1]))
    for r0 in range(0, matrix.shape[0], hw.crossbar.rows):
        chunk = matrix[r0:r0 + hw.crossbar.rows]
        read += serial.product(windows[:, r0:r0 + hw.crossbar.rows].astype(np.uint8), slice_levels(chunk, hw))
    exact = windows.astype(np.float64) @ (matrix.astype(np.float64) - OFFSET_CENTER)
    signal = float((((windows.astype(np.float64) - x_zp) @ (matrix.astype(np.float64) - w_zp)) ** 2).sum())
    error = float(((read - exact) ** 2).sum())
    if signal == 0:   # all weights at the zero point: no output to err on
        return 0.0 if error == 0 else float("inf")
    return error / signal


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 300), n=st.integers(1, 20), spread=st.integers(1, 127),
       bits=st.sampled_from([1, 2]))
def test_the_adc_error_is_the_bit_serial_emulations(seed, k, n, spread, bits):
    rng = np.random.default_rng(seed)
    codes = np.clip(OFFSET_CENTER + rng.integers(-spread, spread + 1, (n, k)), 0, 255).astype(np.uint8)
    windows = rng.integers(0, 256, (7, k)).astype(np.float32)
    x_zp, w_zp = 100, np.full(n, OFFSET_CENTER)
    hw = TWO_BIT.sliced(bits)
    got = adc_error([windows], codes, {"x_zp": x_zp}, w_zp, hw)
    assert got == pytest.approx(exhaustive_error(windows, codes, x_zp, OFFSET_CENTER, hw), rel=1e-9, abs=1e-15)


def test_auto_keeps_two_bit_slices_exactly_where_they_fit_the_budget():
    _, inputs = built("bert-base-small")
    calibration = (tuple(np.asarray(x) for x in inputs),)
    quantized = compile_model(lowered("bert-base-small"), TWO_BIT, calibration, inputs, "unused.arasw",
                              CompileOptions()).model
    chosen = choose_slicing(quantized, TWO_BIT, calibration, budget=1e-4)
    errors = {name: errs[2] for name, (_, errs) in chosen.items()}
    assert any(e > 1e-4 for e in errors.values()) and any(e <= 1e-4 for e in errors.values())
    for name, (bits, _) in chosen.items():
        assert bits == (2 if errors[name] <= 1e-4 else 1)
    model = WeightSlicing("auto", 1e-4, calibration).run(quantized, TWO_BIT)
    got = {layer.name: layer.attr("weight_slice_bits") for layer in model.graph.layers if is_crossbar_layer(layer)}
    assert got == {name: (None if bits == 2 else 1) for name, (bits, _) in chosen.items()}
    # with no budget, every layer whose 2-bit sums clip at all gets 1-bit slices; with budget 1, none
    assert all(bits == 1 for bits, errs in choose_slicing(quantized, TWO_BIT, calibration, 0.0).values() if errs[2] > 0)
    assert all(bits == 2 for bits, _ in choose_slicing(quantized, TWO_BIT, calibration, 0.999).values())


@pytest.mark.parametrize("hw, bits, message", [
    ("aras-differential-1bit", "2", "cells hold 1 to 1 bits"),
    ("aras-sme", "1", "per-layer slicing is built for packed weights only"),
])
def test_a_slicing_the_chip_cannot_hold_is_a_user_error(hw, bits, message, tmp_path, capsys):
    code = main(["compile", "bert-base-small", "--hw", hw, "--weight-slice-bits", bits, "-o", str(tmp_path / "m.aras"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "m.aras").exists()
    with pytest.raises(WeightSlicingError):
        WeightSlicing(int(bits)).run(lowered("bert-base-small"), bundled_hardware(hw))


def test_an_aras_program_with_a_slicing_the_chip_cannot_hold_names_its_line(tmp_path, capsys):
    path = tmp_path / "m.aras"
    assert main(["compile", "digits-cnn", "--hw", "aras-differential", "--weight-slice-bits", "1", "-o", str(path),
                 "--quiet"]) == 0
    text = path.read_text()
    line = next(i for i, row in enumerate(text.split("\n"), start=1) if "weight_slice_bits=1" in row)
    path.write_text(text.replace("weight_slice_bits=1", "weight_slice_bits=3", 1))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path.name}:{line}" in err and "weight_slice_bits=3" in err and "cells hold 1 to 2 bits" in err


@pytest.mark.parametrize("name", ["aras-differential", "aras-default"])
def test_a_fresh_chip_holds_every_cell_at_level_zero(name):
    from arasc.isa.program import Program
    from arasc.runtime.machine import Machine

    hw = bundled_hardware(name)
    machine = Machine(Program("empty", (name, ""), ("", ""), (), (), (), (), ()), {}, hw)
    assert not cell_levels(machine.cells[[0, hw.apu_rows - 1]], hw).any()


def test_compare_names_each_layers_slicing(tmp_path, capsys):
    def adc_layers(*flags):
        out = tmp_path / "c.json"
        assert main(["compare", "digits-cnn", "--engine", "interpreter", "--adc-bits", "6", "--hw", "aras-differential",
                     *flags, "--json", str(out)]) == 0
        assert "slice bits" in capsys.readouterr().out
        return {row["layer"]: row for row in json.loads(out.read_text())["adc_layers"]}

    chip, auto = adc_layers(), adc_layers("--weight-slice-bits", "auto", "--weight-slice-budget", "0")
    assert {row["slice_bits"] for row in chip.values()} == {2}
    # calibrated on the inputs compared (the example inputs): a budget of 0 slices at 1 bit exactly
    # the layers whose 2-bit slices clipped
    assert {name for name, row in auto.items() if row["slice_bits"] == 1} == \
        {name for name, row in chip.items() if row["clipped"] > 0} != set()
    assert all(row["clipped"] == 0 for row in auto.values())


def test_the_ir_after_weight_slicing_shows_each_layers_slicing(capsys):
    assert main(["ir", "digits-cnn", "--after", "weight-slicing", "--hw", "aras-differential",
                 "--weight-slice-bits", "1"]) == 0
    text = capsys.readouterr().out
    crossbar = [line for line in text.splitlines() if " = qconv2d" in line or " = qlinear" in line]
    assert len(crossbar) == 3 and all("weight_slice_bits=1" in line for line in crossbar)
