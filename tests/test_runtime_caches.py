"""What the interpreter keeps between reads and inferences (runtime/machine.py `_write_keys`,
`_exact_weights`; runtime/timing.py's per-program costs) gives what computing afresh gives: write
pulses against a replay of the writes on cell levels, outputs against the integer reference."""
import dataclasses
import functools
import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.compile import compile_model, weights_name, write_compiled
from arasc.ir import evaluate
from arasc.isa.hardware import default_hardware, dumps_hardware
from arasc.isa.program import Instr
from arasc.isa.tiling import cell_levels
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


def replayed_writes(machine: Machine, writes: list[tuple[str, int, int]], cells: np.ndarray) -> tuple[int, int]:
    """(pulses, changed cells) of `writes` (layer, block, APU row) from `cells`, counted on the
    cell levels of each weight (isa.tiling.cell_levels), not the machine's tables; `cells` is updated."""
    pulses = changed = 0
    for layer, block, row in writes:
        contents, masks, _, _ = machine.block_contents(machine.layers[layer])
        new = np.where(masks[block], contents[block], cells[row])
        diff = np.abs(cell_levels(new, machine.hw).astype(np.int64) - cell_levels(cells[row], machine.hw))
        pulses += int(diff.sum())
        changed += int(np.count_nonzero(diff))
        cells[row] = new
    return pulses, changed


def layer_blocks(machine: Machine) -> list[tuple[str, int, bool]]:
    """Every (layer, block, partial?) of the machine's program."""
    found = []
    for layer in machine.p.layers:
        _, _, partial, _ = machine.block_contents(layer)
        found += [(layer.name, b, bool(p)) for b, p in enumerate(partial)]
    return found


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_write_counts_kept_per_row_contents_equal_a_replay(data):
    """Random write sequences over a few rows, each run several times (as inferences repeat
    them), mixing whole and partial blocks: the counts the machine keeps must be those of the
    cells each write finds. A key without the row's contents, or a partial write taken to define
    its row's cells, gives other counts."""
    _, program, weights, hw = on_a_small_chip()
    machine = Machine(program, weights, hw)
    blocks = layer_blocks(machine)
    partial = [b for b in blocks if b[2]]
    assert partial and len(partial) < len(blocks)   # both kinds are there to mix
    pick = st.sampled_from(blocks + partial * 3)    # partial blocks often, over each other
    sequence = data.draw(st.lists(st.tuples(pick, st.integers(0, 3)), min_size=1, max_size=12))
    cells = np.zeros_like(machine.cells)
    for _ in range(data.draw(st.integers(1, 3))):
        for (layer, block, _), row in sequence:
            before = (machine.writes.pulses, machine.writes.cells_written)
            machine.write_blocks([Instr("wr", (("layer", layer), ("block", block), ("rows", (row,))))])
            got = (machine.writes.pulses - before[0], machine.writes.cells_written - before[1])
            assert got == replayed_writes(machine, [(layer, block, row)], cells)
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
    cells = np.zeros((hw.apu_rows, *hw.block), np.uint8)
    run, steady = None, []
    for _ in range(3):
        run = execute(program, weights, hw, x, machine=run.machine if run else None, int8=True)
        assert [np.array_equal(got, w) for got, w in zip(run.outputs.values(), want, strict=True)] == [True] * len(want)
        assert (run.machine.writes.pulses, run.machine.writes.cells_written) == replayed_writes(run.machine, writes, cells)
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
