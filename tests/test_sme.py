"""SME's bit-sliced mapping, squeeze-out and weight-bits (docs/tiling.md, "Bit-sliced mapping").

- the hardware field: default "packed" for files without it, left out of the canonical text (every
  existing chip keeps its fingerprint), bundled aras-sme, refused with differential pairs;
- the dense bit-sliced map holds exactly the packed map's cells, rearranged: the same blocks, and
  each APU row's byte at (r, c) is the packed code;
- squeeze-out leaves out exactly the slice tiles that are zero for every weight, and what is left
  spells every code again (a second, direct reconstruction);
- compiled programs on aras-sme, dense or squeezed, whatever the weight width, equal the integer
  reference bit for bit (hypothesis, on small random models whose slice tiles are zeroed at random);
- squeeze-out shrinks blocks, pulses and the write-only bound; the verifier checks `apu_rows`
  against the codes; on a packed chip the option is a user error (exit 2);
- weight-bits keeps every code below 2^N and each layer's real weights within half a new step.
"""
import dataclasses
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.compile import Compiled, compile_model, compile_quantized, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.ir import evaluate
from arasc.isa.hardware import (
    HardwareConfigError,
    bundled_hardware,
    default_hardware,
    dumps_hardware,
    hardware_fingerprint,
    loads_hardware,
)
from arasc.isa.tiling import (
    block_grid,
    layer_blocks,
    slice_tile_nonzero,
    sliced_block_count,
    sliced_blocks,
    sliced_layout,
    weight_matrix,
)
from arasc.options import CompileOptions
from arasc.passes.tile import is_crossbar_layer
from arasc.runtime.report import run_summary
from arasc.runtime.run import run_file
from arasc.runtime.verify import VerifyError

from conftest import built, lowered

SME = bundled_hardware("aras-sme")
PACKED = default_hardware()


def test_weight_mapping_defaults_to_packed_and_keeps_fingerprints():
    text = dumps_hardware(PACKED)
    assert "weight_mapping" not in text                    # the default is left out of the canonical text
    assert loads_hardware(text) == PACKED and not PACKED.bit_sliced
    sliced = loads_hardware(text.replace('weight_encoding = "unsigned"',
                                         'weight_encoding = "unsigned"\nweight_mapping = "bit_sliced"'))
    assert sliced.bit_sliced and 'weight_mapping = "bit_sliced"' in dumps_hardware(sliced)
    assert hardware_fingerprint(sliced) != hardware_fingerprint(PACKED)
    assert SME.bit_sliced and SME.block == PACKED.block and SME.crossbar == dataclasses.replace(
        PACKED.crossbar, weight_mapping="bit_sliced")


@pytest.mark.parametrize("edit, message", [
    ('weight_encoding = "unsigned"\nweight_mapping = "sliced"', '"packed" or "bit_sliced"'),
    ('weight_encoding = "differential"\nweight_mapping = "bit_sliced"', "not built"),
])
def test_weight_mapping_is_validated(edit, message):
    text = dumps_hardware(PACKED).replace('weight_encoding = "unsigned"', edit)
    with pytest.raises(HardwareConfigError, match=message):
        loads_hardware(text, source="chip.toml")


def spelled(layout, contents, k, n, hw):
    """The K x N codes the slots of a bit-sliced layer spell, rebuilt slot by slot (a second
    implementation of the splice: each slot's levels, shifted to its slice, added into its place)."""
    rows, cols = hw.block
    bits = hw.crossbar.cell_bits
    kb, nb = block_grid(k, n, hw)
    out = np.zeros((kb * rows, nb * cols), np.int64)
    for (_, i, slots), block in zip(layout, contents, strict=True):
        for s, (j, t) in enumerate(slots):
            level = (block.astype(np.int64) >> (s * bits)) & ((1 << bits) - 1)
            out[i * rows:(i + 1) * rows, j * cols:(j + 1) * cols] += level << (t * bits)
    return out[:k, :n]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 400), n=st.integers(1, 400), zeroed=st.floats(0, 1))
def test_squeeze_out_leaves_out_exactly_the_zero_slice_tiles(seed, k, n, zeroed):
    rng = np.random.default_rng(seed)
    matrix = rng.integers(0, 256, (k, n)).astype(np.uint8)
    kb, nb = block_grid(k, n, SME)
    rows, cols = SME.block
    for i, j, t in zip(*np.nonzero(rng.random((kb, nb, 4)) < zeroed), strict=True):   # zero whole slice tiles
        matrix[i * rows:(i + 1) * rows, j * cols:(j + 1) * cols] &= np.uint8(~(3 << (2 * t)) & 0xFF)
    weight = np.ascontiguousarray(matrix.T)           # a linear layer's [N, K]
    dense = sliced_layout(weight, {}, SME, squeeze=False)
    packed, _ = layer_blocks(weight, {}, PACKED)
    contents, _ = sliced_blocks(weight, {}, dense, SME)
    assert len(dense) == kb * nb == sliced_block_count(weight, {}, SME, False)
    assert np.array_equal(contents, packed)           # the same cells, rearranged: each byte is the code
    squeezed = sliced_layout(weight, {}, SME, squeeze=True)
    nonzero = slice_tile_nonzero(matrix, SME)
    held = {(i, j, t) for _, i, slots in squeezed for j, t in slots}
    assert held == set(zip(*np.nonzero(nonzero), strict=True)) or (not nonzero.any() and len(squeezed) == 1)
    assert len(squeezed) == sliced_block_count(weight, {}, SME, True)
    assert len(squeezed) == max(1, sum(-(-int(nonzero[i].sum()) // 4) for i in range(kb)))
    assert np.array_equal(spelled(squeezed, sliced_blocks(weight, {}, squeezed, SME)[0], k, n, SME), matrix)


class Mlp(torch.nn.Module):
    def __init__(self, k: int, n: int):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(k, n), torch.nn.Linear(n, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def linear_model(seed: int, k: int, n: int):
    torch.manual_seed(seed)
    return Mlp(k, n).eval(), (torch.randn(3, k),)


def zero_slice_tiles(model, seed: int, share: float):
    """The quantized model with a random share of each crossbar layer's slice tiles zeroed (another
    valid model: the quantizer's codes fill 0..255, so few tiles are zero by themselves)."""
    rng = np.random.default_rng(seed)
    weights = dict(model.weights)
    rows, cols = SME.block
    for layer in model.graph.layers:
        if not is_crossbar_layer(layer):
            continue
        name = layer.weight("weight").name
        codes = np.array(weights[name])
        for matrix in weight_matrix(codes, dict(layer.attrs)):   # views into codes
            kb, nb = block_grid(*matrix.shape, SME)
            for i, j, t in zip(*np.nonzero(rng.random((kb, nb, 4)) < share), strict=True):
                matrix[i * rows:(i + 1) * rows, j * cols:(j + 1) * cols] &= np.uint8(~(3 << (2 * t)) & 0xFF)
        weights[name] = codes
    return model.replace(weights=weights)


def recompiled(model, hw, options, inputs, folder) -> tuple[Compiled, str]:
    """The driver's stages after quantize on a compiled model whose codes were changed, written out
    (weight-bits already ran: it is not run twice)."""
    path = f"{folder}/m.aras"
    result = compile_quantized(model, hw, [inputs], inputs, weights_name(path), dataclasses.replace(options, weight_bits=8))
    write_compiled(result, path)
    return result, path


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 300), n=st.integers(1, 300), bits=st.sampled_from([8, 6, 4, 2]),
       share=st.floats(0, 1))
def test_sliced_and_squeezed_programs_equal_the_reference_bit_for_bit(seed, k, n, bits, share):
    module, inputs = linear_model(seed, k, n)
    options = CompileOptions(weight_center=None, squeeze_out="on", weight_bits=bits, banks="greedy")
    folder = tempfile.mkdtemp(prefix="arasc-sme-")
    first = compile_model(import_module(module, inputs, "mlp"), SME, [inputs], inputs, "unused.arasw", options)
    inputs = tuple(x.numpy() for x in inputs)
    result, path = recompiled(zero_slice_tiles(first.model, seed, share), SME, options, inputs, folder)
    reference = [t.numpy() for t in evaluate(result.model, inputs)]
    for run in (run_file(path), run_file(path, bit_serial=True)):
        for got, want in zip(run.outputs.values(), reference, strict=True):
            assert np.array_equal(got, want)
    layers = [layer for layer in result.model.graph.layers if is_crossbar_layer(layer)]
    assert all(layer.attr("squeeze_out") for layer in layers)
    assert run.machine.writes.blocks == sum(layer.attr("apu_rows") for layer in layers)


@pytest.mark.parametrize("name", ["digits-cnn", "resnet50-small"])
def test_dense_bit_sliced_program_is_the_packed_program_rearranged(name):
    _, inputs = built(name)
    runs = {}
    for hw in (PACKED, SME):
        path = f"{tempfile.mkdtemp(prefix='arasc-sme-')}/{name}.aras"
        result = compile_model(lowered(name), hw, [inputs], inputs, weights_name(path))
        write_compiled(result, path)
        runs[hw.chip.name] = (result, run_file(path, inferences=2))
    (packed, a), (sliced, b) = runs.values()
    assert packed.text.replace("aras-default", "X").split("\n")[1:] != []  # both compiled
    assert [layer.attrs for layer in packed.model.graph.layers] == [layer.attrs for layer in sliced.model.graph.layers]
    for got, want in zip(b.outputs.values(), a.outputs.values(), strict=True):
        assert np.array_equal(got, want)
    s, p = run_summary(b), run_summary(a)
    assert (s["blocks_written"], s["write_pulses"], s["cycles"]) == (p["blocks_written"], p["write_pulses"], p["cycles"])


def test_squeeze_out_shrinks_blocks_pulses_and_the_bound_and_the_verifier_checks_it(tmp_path):
    name = "bert-base-small"
    _, inputs = built(name)
    summaries = {}
    for label, options in (("dense", CompileOptions()), ("squeezed", CompileOptions(squeeze_out="on", weight_bits=4))):
        path = tmp_path / f"{label}.aras"
        result = compile_model(lowered(name), SME, [inputs], inputs, weights_name(str(path)), options)
        write_compiled(result, str(path))
        summaries[label] = run_summary(run_file(str(path)))
    dense, squeezed = summaries["dense"], summaries["squeezed"]
    assert squeezed["blocks_written"] < dense["blocks_written"]
    assert squeezed["write_pulses"] < dense["write_pulses"]
    assert squeezed["energy_joules"]["write"] < dense["energy_joules"]["write"]
    text = path.read_text()
    assert "squeeze_out=true" in text and "weight_bits=4" in text
    line = next(row for row in text.splitlines() if row.startswith(".layer") and "apu_rows=" in row)
    rows = int(line.split("apu_rows=")[1].split(",")[0].split("}")[0].split(" ")[0])
    path.write_text(text.replace(line, line.replace(f"apu_rows={rows}", f"apu_rows={rows + 1}")))
    with pytest.raises(VerifyError, match="apu_rows"):
        run_file(str(path))


def test_squeeze_out_on_a_packed_chip_is_a_user_error(tmp_path, capsys):
    from arasc.cli import main

    out = tmp_path / "d.aras"
    assert main(["compile", "digits-cnn", "-o", str(out), "--squeeze-out", "on", "--quiet"]) == 2
    assert "needs a bit-sliced chip" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_weight_bits_keeps_codes_narrow_and_values_close():
    from arasc.passes import run_passes
    from arasc.passes.quantize import Quantize
    from arasc.passes.shift_weights import channel_param
    from arasc.passes.weight_bits import WeightBits

    _, inputs = built("digits-cnn")
    quantized = run_passes(lowered("digits-cnn"), SME, [Quantize(calibration=(tuple(np.asarray(x) for x in inputs),))])
    narrow = WeightBits(4).run(quantized, SME)
    for before, after in zip(quantized.graph.layers, narrow.graph.layers, strict=True):
        if not is_crossbar_layer(before):
            assert before == after
            continue
        assert after.attr("weight_bits") == 4
        codes = np.asarray(narrow.weights[after.weight("weight").name]).astype(np.int64)
        old = np.asarray(quantized.weights[before.weight("weight").name]).astype(np.int64)
        assert codes.max() <= 15
        zp, new_zp = channel_param(quantized, before, "w_zp"), channel_param(narrow, after, "w_zp")
        real_old = (old.reshape(len(zp), -1) - zp[:, None])            # in units of the old scale
        real_new = (codes.reshape(len(zp), -1) - new_zp[:, None]) * 16  # the new scale is 16 times larger
        inside = (codes.reshape(len(zp), -1) > 0) & (codes.reshape(len(zp), -1) < 15)   # clipped codes aside
        assert np.abs(real_new - real_old)[inside].max() <= 16          # half a new step, and the zero point's rounding
        shift_old, shift_new = channel_param(quantized, before, "shift"), channel_param(narrow, after, "shift")
        m_old, m_new = channel_param(quantized, before, "multiplier"), channel_param(narrow, after, "multiplier")
        assert np.array_equal(m_new.astype(float) / 2.0 ** shift_new, m_old.astype(float) / 2.0 ** shift_old * 16)


def test_write_pulses_leave_the_cells_of_unused_slots_alone(tmp_path):
    """On a chip of 2 APU rows every row is rewritten many times; a squeezed block of fewer slots
    than the row has must leave the other slots' cells at their levels. The pulses are recounted
    here cell by cell, slot by slot, from the weights themselves (not from the machine's bytes)."""
    text = dumps_hardware(SME).replace("pes = 96", "pes = 1").replace("apu_rows_per_pe = 6", "apu_rows_per_pe = 2")
    chip = tmp_path / "tiny.toml"
    chip.write_text(text)
    hw = loads_hardware(text)
    module, inputs = linear_model(3, 200, 300)
    options = CompileOptions(weight_center=None, squeeze_out="on", weight_bits=6, banks="greedy")
    path = tmp_path / "m.aras"
    result = compile_model(import_module(module, inputs, "mlp"), hw, [inputs], inputs, weights_name(str(path)), options)
    write_compiled(result, str(path))
    run = run_file(str(path), hw_path=str(chip))
    rows, cols = hw.block
    levels = np.zeros((hw.apu_rows, 4, rows, cols), np.int64)      # [APU row, slot, row, column]
    layers = {layer.name: layer for layer in result.model.graph.layers if is_crossbar_layer(layer)}
    pulses = 0
    for instr in result.program.write:
        if instr.opcode != "wr":
            continue
        layer = layers[instr["layer"]]
        codes = np.asarray(result.model.weights[layer.weight("weight").name])
        layout = sliced_layout(codes, dict(layer.attrs), hw, squeeze=True)
        _, i, slots = layout[instr["block"]]
        matrix = weight_matrix(codes, dict(layer.attrs))[0].astype(np.int64)
        for row in instr["rows"]:
            for s, (j, t) in enumerate(slots):
                tile = matrix[i * rows:(i + 1) * rows, j * cols:(j + 1) * cols]
                new = (tile >> (2 * t)) & 3
                old = levels[row, s, :tile.shape[0], :tile.shape[1]]
                pulses += int(np.abs(new - old).sum())
                old[...] = new
    assert any(len(slots) < 4 for layer in layers.values()
               for _, _, slots in sliced_layout(np.asarray(result.model.weights[layer.weight("weight").name]),
                                                dict(layer.attrs), hw, squeeze=True))
    assert run.machine.writes.pulses == pulses
