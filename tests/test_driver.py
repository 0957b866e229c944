"""The driver (arasc/compile.py): its stages in order, CompileOptions and the flags made from it,
--print-after, --dump-dir, the IR of a failing pass, and `arasc demo` through the same driver."""
import dataclasses
import os
import re
from pathlib import Path

import pytest
import torch

from arasc.cli import build_parser, main
from arasc.compile import compile_source, weights_name
from arasc.ir import parse_graph, print_graph
from arasc.isa.hardware import default_hardware
from arasc.loader import Source
from arasc.options import IR_STAGES, CompileOptions, options_from_args
from arasc.passes import PassError
from arasc.passes.shift_weights import CENTERS
from arasc.stages import Stages

from conftest import built

ISA_DIR = Path(__file__).resolve().parent.parent / "isa"
STAGES = ["capture", "lower", "quantize", "shift-weights", "center-offset", "input-slicing", "dynamic-precision",
          "weight-bits", "slice-sparsity", "squeeze-out", "weight-slicing", "tile",
          "replication", "schedule", "banks", "emit"]


def small_source(name="resnet50-small"):
    module, inputs = built(name)
    return Source(module, tuple(inputs), name)


def test_the_driver_runs_every_stage_in_order():
    stages = Stages()
    compiled = compile_source(small_source(), default_hardware(), "r.arasw", stages=stages)
    assert [r.name for r in stages.records] == STAGES
    assert all(r.seconds >= 0 and r.peak_rss_bytes > 0 for r in stages.records)
    assert compiled.program.layers and dict(compiled.model.graph.meta)["weight_center"] in CENTERS


def test_every_option_is_one_flag_with_its_default():
    parser = build_parser()
    base = ["compile", "m", "-o", "m.aras"]
    assert options_from_args(parser.parse_args(base)) == CompileOptions()
    for f in dataclasses.fields(CompileOptions):
        flag = "--" + f.name.replace("_", "-")
        choices = f.metadata["choices"] or {"weight_center": ("none",), "channel_groups": ("4",), "smooth": ("0.5",),
                                            "input_slice_bits": ("2",), "weight_bits": ("6",),
                                            "weight_bits_budget": ("0.01",), "weight_slice_bits": ("1",),
                                            "weight_slice_budget": ("0.01",), "squeeze_out_budget": ("0.01",)}[f.name]
        value = next(c for c in choices if c != f.default)
        options = options_from_args(parser.parse_args(base + [flag, value]))
        assert getattr(options, f.name) != f.default, flag
        assert options.changed() == {f.name: getattr(options, f.name)}


def test_options_built_in_python_are_checked_like_flags():
    with pytest.raises(ValueError, match="scheduler='fast'"):
        CompileOptions(scheduler="fast")
    with pytest.raises(ValueError, match="weight_center.*auto, none, or one of 88"):
        CompileOptions(weight_center=100)
    assert CompileOptions(weight_center=None).weight_center is None


def test_print_after_and_dump_dir(tmp_path, capsys):
    out = tmp_path / "r.aras"
    assert main(["compile", "resnet50-small", "-o", str(out), "--print-after", "all", "--dump-dir",
                 str(tmp_path / "ir"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "\nwrote " in printed  # the summary line follows the IR
    printed = printed[:printed.index("\nwrote ") + 1]
    sections = re.split(r"^# ----- IR after (\S+) -----\n", printed, flags=re.M)
    assert sections[0] == "" and sections[1::2] == list(IR_STAGES)
    dumped = sorted(os.listdir(tmp_path / "ir"))
    assert dumped == [f"{i:02d}-{name}.ir" for i, name in enumerate(IR_STAGES, start=1)]
    for name, text in zip(IR_STAGES, sections[2::2], strict=True):
        file_text = (tmp_path / "ir" / f"{IR_STAGES.index(name) + 1:02d}-{name}.ir").read_text()
        assert text == file_text
        parse_graph(file_text)
    assert "qconv2d" not in sections[2] and "qconv2d" in sections[4]     # lower, then quantize
    assert "blocks=" in sections[-1] and "blocks=" not in sections[-3]   # tile adds the tile map


def test_print_after_one_pass_prints_that_ir_only(tmp_path, capsys):
    assert main(["compile", "resnet50-small", "-o", str(tmp_path / "r.aras"), "--print-after", "quantize", "-q"]) == 0
    printed = capsys.readouterr().out
    graph = parse_graph(printed[:printed.index("\nwrote ") + 1])
    assert any(layer.op == "qconv2d" for layer in graph.layers)
    assert main(["compile", "resnet50-small", "-o", str(tmp_path / "r.aras"), "--print-after", "emit"]) == 2
    assert "no IR after emit" in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class Failing:
    """A pass that fails: with an arasc bug (RuntimeError) or on the user's model (ValueError)."""

    error: type
    name = "failing"
    requires = ("traced",)
    ensures = ()

    def run(self, model, hw):
        raise self.error("cannot")


def lowered_small():
    stages = Stages(stop_after="lower")
    with pytest.raises(Exception) as stopped:
        compile_source(small_source(), default_hardware(), "x.arasw", stages=stages)
    return stopped.value.model


def test_a_failing_pass_leaves_the_ir_it_was_given(tmp_path):
    model = lowered_small()
    with pytest.raises(PassError, match=r"pass failing failed \(after lower\): cannot \(the IR pass failing was "
                                        r"given: (.*)\)") as err:
        Stages().ir_pass(Failing(RuntimeError), model, None)
    path = re.search(r"given: (.*)\)$", str(err.value)).group(1)
    assert parse_graph(Path(path).read_text()) == model.graph
    with pytest.raises(ValueError, match=r"^cannot$"):  # the user's error: no file unless asked for
        Stages().ir_pass(Failing(ValueError), model, None)
    with pytest.raises(ValueError, match="given: .*00-failing.failed-input.ir"):
        Stages(dump_dir=str(tmp_path)).ir_pass(Failing(ValueError), model, None)
    assert (tmp_path / "00-failing.failed-input.ir").read_text() == print_graph(model.graph)


def test_demo_runs_with_the_hardware_file_it_compiled_for(tmp_path, capsys):
    text = (ISA_DIR / "aras-default.toml").read_text()
    smaller = tmp_path / "smaller.toml"
    smaller.write_text(text.replace("pes = 96 ", "pes = 48 "))
    assert "pes = 48" in smaller.read_text()
    assert main(["demo", "resnet50-small", "--hw", str(smaller), "-q"]) == 0
    out = capsys.readouterr().out
    assert "interpreter vs PyTorch float" in out


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_demo_of_a_saved_export_program(tmp_path, capsys):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(TinyNet().eval(), (x,)), str(path))
    assert main(["demo", str(path), "-q"]) == 0
    comparison = capsys.readouterr().out.split("interpreter vs PyTorch float")[1]
    rows = [line.split("│") for line in comparison.splitlines() if "[2, 4]" in line]
    assert len(rows) == 1 and float(rows[0][3]) > 0.99 and rows[0][5].strip() == "True"


def test_weights_name_sits_beside_the_program():
    assert weights_name("/some/folder/net.aras") == "net.arasw"


def test_lowering_holds_no_second_copy_of_the_float_weights():
    import numpy as np

    from arasc.frontend import import_module

    net = TinyNet().eval()
    model = import_module(net, (torch.randn(1, 3, 8, 8),), "tiny")
    assert np.shares_memory(model.weights["fc.weight"], net.fc.weight.detach().numpy())


def test_the_schedulers_benchmark_never_writes_over_a_file(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("schedulers_benchmark", ISA_DIR.parent / "benchmarks" / "schedulers.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert "docs/results.md" not in benchmark.__doc__  # it suggested overwriting the hand-written results
    written = tmp_path / "results.md"
    written.write_text("hand-written\n")
    with pytest.raises(FileExistsError):
        benchmark.write_markdown([["x"] * len(benchmark.COLUMNS)], str(written))
    assert written.read_text() == "hand-written\n"
    benchmark.write_markdown([["x"] * len(benchmark.COLUMNS)], str(tmp_path / "new.md"))
    assert (tmp_path / "new.md").read_text().count("\n") == 3


def test_the_float_model_is_freed_once_quantized():
    """compile_source holds only the current model: by the stage after quantize, nothing keeps
    the lowered float model (ResNet-50's folded float weights: 0.1 GB) alive."""
    import weakref

    lowered, alive_after_quantize = [], []

    def show(stage, model):
        if stage == "lower":
            lowered.append(weakref.ref(model))
        else:
            alive_after_quantize.append(lowered[0]() is not None)

    stages = Stages(print_after=("lower", "shift-weights"), show=show)
    compile_source(small_source(), default_hardware(), "r.arasw", stages=stages)
    assert alive_after_quantize == [False]
