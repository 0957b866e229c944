"""ReDy's dynamic activation precision, lossless (runtime/adc.py, arasc/passes/dynamic_precision.py)."""
import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.compile import compile_model, weights_name, write_compiled
from arasc.isa.hardware import default_hardware
from arasc.options import CompileOptions
from arasc.runtime.adc import window_steps
from arasc.runtime.run import run_file

from conftest import built, lowered
from conftest import compiled as compiled_default


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), top=st.integers(0, 255), slice_bits=st.integers(1, 8))
def test_window_steps_run_the_planes_up_to_the_highest_set_bit(seed, top, slice_bits):
    codes = np.random.default_rng(seed).integers(0, top + 1, (12, 40)).astype(np.uint8)
    want = [-(-len(bin(int(row.max()))[2:].lstrip("0")) // slice_bits) for row in codes]
    assert window_steps(codes, slice_bits).tolist() == want


def program(options):
    _, inputs = built("digits-cnn")
    path = f"{tempfile.mkdtemp(prefix='arasc-redy-')}/d.aras"
    compiled = compile_model(lowered("digits-cnn"), default_hardware(), [inputs], inputs, weights_name(path), options)
    write_compiled(compiled, path)
    return compiled, path


def test_dynamic_precision_changes_no_output_and_saves_conversions():
    plain_compiled, plain_path = compiled_default("digits-cnn")
    compiled, path = program(CompileOptions(dynamic_precision="on"))
    assert "dynamic_precision=true" in compiled.text and "dynamic_precision" not in plain_compiled.text
    for adc in (None, 5):
        plain, dynamic = run_file(plain_path, adc_bits=adc), run_file(path, adc_bits=adc)
        for got, want in zip(dynamic.outputs.values(), plain.outputs.values(), strict=True):
            assert np.array_equal(got, want)
        assert dynamic.timing.adc_conversions < plain.timing.adc_conversions
        assert dynamic.timing.energy.adc < plain.timing.energy.adc
        assert dynamic.timing.energy.compute < plain.timing.energy.compute
