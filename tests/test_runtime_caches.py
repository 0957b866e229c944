"""What the interpreter keeps between reads and inferences (runtime/machine.py `_write_keys`,
`_exact_weights`; runtime/timing.py's per-program costs) gives what computing afresh gives: write
pulses against a replay of the writes on cell levels, outputs against the integer reference."""
import dataclasses
import functools
import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_weight_slicing import resliced, tiny, written

from arasc.compile import compile_model, weights_name, write_compiled
from arasc.ir import evaluate
from arasc.isa.hardware import default_hardware, dumps_hardware
from arasc.isa.program import Instr
from arasc.isa.tiling import OFFSET_CENTER, cell_levels
from arasc.options import CompileOptions
from arasc.passes.tile import is_crossbar_layer
from arasc.runtime.machine import Machine
from arasc.runtime.run import execute, load_program, read_inputs

from conftest import built, lowered


@functools.cache
def on_a_small_chip(name: str = "resnet50-small"):
    """(quantized model, program, weights, hardware) of a zoo model compiled for a chip of 16 APU
    rows, too few for its blocks: every inference writes rows again, over other blocks."""
    hw = default_hardware()
    small = dataclasses.replace(hw, chip=dataclasses.replace(hw.chip, pes=1, apu_rows_per_pe=16))
    folder = tempfile.mkdtemp(prefix="arasc-test-")
    with open(f"{folder}/small.toml", "w") as f:
        f.write(dumps_hardware(small))
    module, inputs = built(name)
    path = f"{folder}/{name}.aras"
    result = compile_model(lowered(name), small, [inputs], inputs, weights_name(path))
    write_compiled(result, path)
    return (result.model, *load_program(path, f"{folder}/small.toml"))


def replayed_writes(machine: Machine, writes: list[tuple[str, int, int]], cells: np.ndarray,
                    slicing: list[int]) -> tuple[int, int]:
    """(pulses, changed cells) of `writes` (layer, block, APU row) from `cells` (of rows whose
    weights are sliced as `slicing` says, 0 for a fresh row), counted on the cell levels of each
    weight (isa.tiling.cell_levels), not the machine's tables; `cells` and `slicing` are updated.
    A write at the slicing its row holds moves the cells of its block's weights; at another,
    every cell of the row, those its block leaves empty to level 0 (machine.py `_reprogram`)."""
    pulses = changed = 0
    empty = np.uint8(OFFSET_CENTER if machine.hw.differential else 0)
    for layer, block, row in writes:
        own = machine.layer_hw[layer]
        contents, masks, _, _ = machine.block_contents(machine.layers[layer])
        bits, cols = own.crossbar.cell_bits, own.block[1]
        before = machine.hw.sliced(slicing[row] or bits)
        old = cell_levels(cells[row, :, :before.block[1]], before).astype(np.int64)
        kept = cells[row, :, :cols] if slicing[row] in (0, bits) else empty
        new = np.where(masks[block], contents[block], kept)
        diff = np.abs(cell_levels(new, own).astype(np.int64) - old)
        pulses += int(diff.sum())
        changed += int(np.count_nonzero(diff))
        cells[row, :, :cols], slicing[row] = new, bits
    return pulses, changed


def layer_blocks(machine: Machine) -> list[tuple[str, int, bool]]:
    """Every (layer, block, partial?) of the machine's program."""
    found = []
    for layer in machine.p.layers:
        _, _, partial, _ = machine.block_contents(layer)
        found += [(layer.name, b, bool(p)) for b, p in enumerate(partial)]
    return found


@functools.cache
def mixed_slicings():
    """(program, weights, hardware) of digits-cnn on test_weight_slicing's tiny chip of 10 APU
    rows, its layers sliced 1 and 2 bits in turn: writes reprogram rows of the other slicing."""
    _, inputs = built("digits-cnn")
    hw = tiny(2)
    folder = tempfile.mkdtemp(prefix="arasc-test-")
    first, _, _ = written(folder, hw, lowered("digits-cnn"), CompileOptions(weight_center=None), inputs)
    names = [layer.name for layer in first.model.graph.layers if is_crossbar_layer(layer)]
    widths = {name: 1 + a % 2 for a, name in enumerate(names)}
    inputs = tuple(np.asarray(x) for x in inputs)
    _, path, hw_path = written(folder, hw, resliced(first.model, widths, hw), CompileOptions(weight_center=None),
                               inputs, quantized=True)
    return load_program(path, hw_path)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), mixed=st.booleans())
def test_write_counts_kept_per_row_contents_equal_a_replay(data, mixed):
    """Random write sequences over a few rows, each run several times (as inferences repeat
    them), mixing whole and partial blocks (and, `mixed`, slicings): the counts the machine keeps
    must be those of the cells each write finds. A key without the row's contents, a partial
    write taken to define its row's cells, or a reprogrammed row's old state gives other counts."""
    program, weights, hw = mixed_slicings() if mixed else on_a_small_chip()[1:]
    machine = Machine(program, weights, hw)
    blocks = layer_blocks(machine)
    partial = [b for b in blocks if b[2]]
    assert partial and len(partial) < len(blocks)   # both kinds are there to mix
    # a few blocks over two rows, so that the same write meets rows of different histories
    few = data.draw(st.lists(st.sampled_from(blocks + partial * 3), min_size=2, max_size=4, unique=True))
    sequence = data.draw(st.lists(st.tuples(st.sampled_from(few), st.integers(0, 1)), min_size=1, max_size=16))
    cells, slicing = machine.cells.copy(), [0] * hw.apu_rows
    for _ in range(data.draw(st.integers(1, 3))):
        for (layer, block, _), row in sequence:
            before = (machine.writes.pulses, machine.writes.cells_written)
            machine.write_blocks([Instr("wr", (("layer", layer), ("block", block), ("rows", (row,))))])
            got = (machine.writes.pulses - before[0], machine.writes.cells_written - before[1])
            assert got == replayed_writes(machine, [(layer, block, row)], cells, slicing)
    assert np.array_equal(machine.cells, cells)


def test_steady_state_inferences_equal_the_reference_and_a_replay():
    """Three inferences on one machine (the second and third find every kept count and weight
    matrix): outputs equal the integer reference, write pulses equal a replay of the program's
    writes from the cells the previous inference left, cycles and energy equal the first
    steady-state run's."""
    model, program, weights, hw = on_a_small_chip()
    want = [t.numpy() for t in evaluate(model, built("resnet50-small")[1])]
    x = read_inputs(program, weights, None)
    writes = [(i["layer"], i["block"], row) for i in program.write if i.opcode == "wr" for row in i["rows"]]
    assert len({row for _, _, row in writes}) < len(writes)   # rows are written again: contents vary
    cells, slicing = np.full((hw.apu_rows, *hw.block), OFFSET_CENTER if hw.differential else 0, np.uint8), [0] * hw.apu_rows
    run, steady = None, []
    for _ in range(3):
        run = execute(program, weights, hw, x, machine=run.machine if run else None, int8=True)
        assert [np.array_equal(got, w) for got, w in zip(run.outputs.values(), want, strict=True)] == [True] * len(want)
        assert (run.machine.writes.pulses, run.machine.writes.cells_written) == replayed_writes(run.machine, writes, cells, slicing)
        steady.append((run.timing.cycles, run.timing.energy.total - run.timing.energy.write))
    # time and all energy but the writes' do not depend on what the cells held: the first run
    # computed each write's and segment's cost, the others found them
    assert steady[0] == steady[1] == steady[2]


def test_kept_timing_costs_are_what_their_keys_compute():
    """Each cost the timing model keeps (runtime/timing.py `costs`) equals its computation from
    its key alone: a key that left out what the cost depends on would differ here."""
    _, program, weights, hw = on_a_small_chip()
    run = execute(program, weights, hw, read_inputs(program, weights, None))
    timing, machine = run.timing, run.machine
    costs = machine.timing_costs
    segments = {(i["layer"], *i["blocks"]) for i in program.compute if i.opcode == "mvm"}
    assert set(costs["segment"]) == segments and len({first for _, first, _ in segments}) > 1
    for (layer, first, last), kept in costs["segment"].items():
        assert kept == timing._block_crossbars_and_adds(timing.layers[layer], range(first, last + 1), machine)
    assert set(costs["write"]) == {(i["layer"], i["block"]) for i in program.write if i.opcode == "wr"}
    for (layer, block), (joules, name) in costs["write"].items():
        assert joules == timing._block_bytes(timing.layers[layer], block, machine) * hw.energy.main_memory_j_per_byte
        assert name == f"write {layer}[{block}]"


def test_a_reprogrammed_row_is_known_by_its_new_block():
    """A row goes through 2-bit block X, 1-bit block A, then B reprograms it, M is written over
    B; then X, A, and C reprograms it, M is written over C. M's counts differ with what B and C
    left, so the row's state after a reprogramming must name the block it now holds (were it
    left as before, after X both times, the second M would find the first one's counts)."""
    program, weights, hw = mixed_slicings()
    machine = Machine(program, weights, hw)
    by_bits: dict[int, list[tuple[str, int]]] = {}
    for layer, block, _ in layer_blocks(machine):
        by_bits.setdefault(machine.layer_hw[layer].crossbar.cell_bits, []).append((layer, block))
    a, (b, c, m, x) = by_bits[1][0], by_bits[2][:4]
    cells, slicing = machine.cells.copy(), [0] * hw.apu_rows
    for layer, block in [x, a, b, m, x, a, c, m]:
        before = (machine.writes.pulses, machine.writes.cells_written)
        machine.write_blocks([Instr("wr", (("layer", layer), ("block", block), ("rows", (0,))))])
        got = (machine.writes.pulses - before[0], machine.writes.cells_written - before[1])
        assert got == replayed_writes(machine, [(layer, block, 0)], cells, slicing)
