"""Write-round packing (arasc/schedule/packing.py, aras.py): a short layer computes on the blocks
already written when the rows run out. The walk's row bookkeeping, the pieces' cover of every
layer, bit-exact outputs, the timing invariants and the time saved, on a chip small enough that
bert-base-small runs out of rows in the middle of its layers."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.backend.segments import segments_of
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.isa.hardware import default_hardware, dumps_hardware, loads_hardware
from arasc.options import CompileOptions
from arasc.runtime.report import run_summary
from arasc.runtime.run import run_file
from arasc.runtime.timing import upper_bound_cycles
from arasc.schedule.aras import binding_walk, numbered

from conftest import built, lowered


@settings(max_examples=80, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12), rows=st.integers(8, 64), data=st.data())
def test_packed_pieces_cover_each_layer_once_and_never_share_a_row(sizes, rows, data):
    segments = [seg for i, blocks in enumerate(sizes) for seg in segments_of(f"l{i}", blocks, rows)]
    packed = {f"l{i}" for i in range(len(sizes)) if data.draw(st.booleans())}
    held: dict[int, object] = {}
    pieces: dict[str, list] = {}
    pieces_rows: dict = {}
    events = numbered(list(binding_walk(segments, {}, rows, packed)))
    for event in events:
        if event[0] == "reclaim":
            for row in pieces_rows[event[1]]:
                assert held.pop(row) == event[1]
        elif event[0] == "write":
            for row in event[3]:
                assert row not in held, f"row {row} given out while {held.get(row)} holds it"
                held[row] = event[1]
        else:
            pieces.setdefault(event[1].layer, []).append(event[1])
            pieces_rows[event[1]] = event[2]
            assert len(event[2]) == len(event[1].blocks)
    for i, blocks in enumerate(sizes):
        layer = pieces[f"l{i}"]
        assert [b for piece in layer for b in piece.blocks] == list(range(blocks))
        assert [p.index for p in layer] == list(range(len(layer))) and {p.count for p in layer} == {len(layer)}
        if f"l{i}" not in packed:
            assert len(layer) == len(segments_of(f"l{i}", blocks, rows))


def test_a_layer_is_cut_where_the_rows_run_out():
    # rows 0..7: l0 takes 5, l1 the other 3 and must wait for l0's compute for its last 2
    events = list(binding_walk(segments_of("l0", 5, 8) + segments_of("l1", 5, 8), {}, 8, {"l1"}))
    bound = [(e[1].layer, e[1].first, e[1].last, e[2]) for e in events if e[0] == "bound"]
    assert bound == [("l0", 0, 4, (0, 1, 2, 3, 4)), ("l1", 0, 2, (5, 6, 7)), ("l1", 3, 4, (0, 1))]
    unpacked = [(e[1].layer, e[1].first, e[1].last) for e in binding_walk(
        segments_of("l0", 5, 8) + segments_of("l1", 5, 8), {}, 8) if e[0] == "bound"]
    assert unpacked == [("l0", 0, 4), ("l1", 0, 4)]


@pytest.fixture(scope="module")
def small_chip_runs(tmp_path_factory):
    """bert-base-small on a chip of 10 APU rows of one 32 x 32-cell crossbar (blocks of 32 x 8
    weights: a 64 x 64 linear layer is 16 blocks), with and without packing."""
    hw = default_hardware()
    tiny = loads_hardware(dumps_hardware(dataclasses.replace(
        hw, chip=dataclasses.replace(hw.chip, pes=1, apu_rows_per_pe=10, apus_per_row=1),
        crossbar=dataclasses.replace(hw.crossbar, rows=32, cols_cells=32))))
    folder = tmp_path_factory.mktemp("packing")
    (folder / "tiny.toml").write_text(dumps_hardware(tiny))
    module, inputs = built("bert-base-small")
    runs = {}
    for packing in ("adaptive", "none"):
        path = str(folder / f"{packing}.aras")
        write_compiled(compile_model(lowered("bert-base-small"), tiny, [inputs], inputs, weights_name(path),
                                     CompileOptions(packing=packing, weight_center=None)), path)
        runs[packing] = run_file(path, hw_path=str(folder / "tiny.toml"), inferences=2)
    return runs


def mvm_count(result):
    return sum(1 for i in result.program.compute if i.opcode == "mvm")


def test_packing_cuts_layers_keeps_outputs_and_saves_time(small_chip_runs):
    packed, plain = small_chip_runs["adaptive"], small_chip_runs["none"]
    assert mvm_count(packed) > mvm_count(plain)  # some layer computes in more pieces
    for a, b in zip(packed.outputs.values(), plain.outputs.values(), strict=True):
        assert np.array_equal(a, b)
    assert packed.timing.cycles < plain.timing.cycles
    assert packed.machine.writes.blocks == plain.machine.writes.blocks
    bound = upper_bound_cycles(packed.program, packed.machine.hw)
    assert bound <= packed.timing.cycles


def test_packed_schedule_keeps_the_timing_invariants(small_chip_runs):
    timing = small_chip_runs["adaptive"].timing
    spans: dict[str, list] = {}
    for s in timing.spans:
        if s.track.startswith("row"):
            spans.setdefault(s.track, []).append(s)
    for track, row in spans.items():
        row.sort(key=lambda s: s.start)
        for a, b in zip(row, row[1:], strict=False):
            assert a.end <= b.start + 1e-9, f"{track}: {a.name} overlaps {b.name}"
        for i, s in enumerate(row):   # every compute on a row follows a finished write of its layer
            if s.name.startswith("mvm "):
                layer = s.name.split()[1]
                assert any(w.name.startswith(f"write {layer}[") and w.end <= s.start for w in row[:i])
    s = run_summary(small_chip_runs["adaptive"])
    assert 0 < s["fraction_of_upper_bound"] <= 1.0
