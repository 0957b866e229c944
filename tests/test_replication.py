"""Adaptive weight replication (paper V-B): the factors, the program that carries them, and the
time they save on the interpreter's own timing model."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.backend.segments import segments_of
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.isa.hardware import default_hardware
from arasc.options import CompileOptions
from arasc.passes.tile import tilings
from arasc.runtime.run import run_file
from arasc.schedule.aras import binding_walk
from arasc.schedule.replication import ROW_SHARE, replication_factors, schedule_cycles

from conftest import SMALL_MODELS, built, compiled, lowered

HW = default_hardware()


def tiled(name):
    return compiled(name)[0].model


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_factors_respect_rows_and_segments_and_never_slow_the_schedule(name):
    model = tiled(name)
    tiles = tilings(model, HW)
    copies = replication_factors(model, HW)
    assert set(copies) == set(tiles)
    for layer, count in copies.items():
        assert count >= 1
        assert count == 1 or (tiles[layer].segments == 1 and count * tiles[layer].apu_rows <= HW.apu_rows // ROW_SHARE)
    assert schedule_cycles(model, HW, copies, tiles) <= schedule_cycles(model, HW, {}, tiles)


def test_a_cnn_replicates_its_first_conv_and_a_transformer_nothing():
    assert replication_factors(tiled("resnet50-small"), HW)["conv1"] > 1
    assert set(replication_factors(tiled("bert-base-small"), HW).values()) == {1}


def test_the_program_writes_and_reads_every_copy():
    result, _ = compiled("resnet50-small")
    copies = replication_factors(tiled("resnet50-small"), HW)["conv1"]
    writes = [i for i in result.program.write if i.opcode == "wr" and i["layer"] == "conv1"]
    assert writes and all(len(i["rows"]) == copies for i in writes)
    (mvm,) = [i for i in result.program.compute if i.opcode == "mvm" and i["layer"] == "conv1"]
    first, last = mvm["blocks"]
    assert len(mvm["rows"]) == copies * (last - first + 1)
    for w in writes:  # copy c of block b sits at rows[c * blocks + b]
        assert w["rows"] == mvm["rows"][w["block"] - first::last - first + 1]


def test_replication_shortens_the_simulated_inference_and_changes_no_output(tmp_path):
    module, inputs = built("resnet50-small")
    runs = {}
    for replication in ("none", "adaptive"):
        path = str(tmp_path / f"{replication}.aras")
        write_compiled(compile_model(lowered("resnet50-small"), HW, [inputs], inputs, weights_name(path),
                                     CompileOptions(replication=replication)), path)
        runs[replication] = run_file(path, inferences=2)
    assert runs["adaptive"].timing.cycles < runs["none"].timing.cycles
    assert runs["adaptive"].machine.writes.blocks > runs["none"].machine.writes.blocks  # copies are written too
    assert list(runs["adaptive"].outputs) == [port.name for port in runs["adaptive"].program.outputs]
    for a, b in zip(runs["adaptive"].outputs.values(), runs["none"].outputs.values(), strict=True):
        assert np.array_equal(a, b)


def test_the_schedule_model_predicts_the_timing_model():
    """`schedule_cycles` leaves out SFU, load and store time: it may only be a little below."""
    result, path = compiled("vgg16-small")
    model = result.model
    predicted = schedule_cycles(model, HW, replication_factors(model, HW), tilings(model, HW))
    simulated = run_file(path, inferences=2, compute=False).timing.cycles
    assert 0.97 * simulated <= predicted <= simulated


@settings(max_examples=80, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12), rows=st.integers(8, 64), data=st.data())
def test_the_binding_walk_never_gives_a_held_row_twice(sizes, rows, data):
    segments = [seg for i, blocks in enumerate(sizes) for seg in segments_of(f"l{i}", blocks, rows)]
    copies = {f"l{i}": data.draw(st.integers(1, max(1, rows // blocks))) for i, blocks in enumerate(sizes)}
    held: dict[int, object] = {}   # row -> segment holding it
    bound, taken_back = {}, set()
    for event in binding_walk(segments, copies, rows):
        if event[0] == "reclaim":
            assert event[1] not in taken_back
            taken_back.add(event[1])
            for row in bound[event[1]]:
                assert held.pop(row) is event[1]
        elif event[0] == "write":
            for row in event[3]:
                assert row not in held, f"row {row} given out while {held.get(row)} holds it"
                held[row] = event[1]
        else:
            _, segment, seg_rows = event
            count = copies[segment.layer] if segment.count == 1 else 1
            assert len(seg_rows) == count * len(segment.blocks) == len(set(seg_rows))
            bound[segment] = seg_rows
    assert set(bound) == set(segments)


def test_copies_that_cannot_fit_the_chip_are_refused():
    with pytest.raises(ValueError, match="more than the chip's 8 APU rows"):
        list(binding_walk(segments_of("l0", 3, 8), {"l0": 3}, 8))
