"""The `arasc` command line: models, ir, compile, run.

Exit status: 0 success, 2 bad input (the message says what and where), 1 internal error.
Set ARASC_DEBUG=1 to see the Python traceback of an internal error.

One error path (`main`): every message is plain text (user strings are never read as markup);
whatever libraries write to stderr while a command runs (torch's own tracebacks and warnings)
is captured and shown only if the command succeeds."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: reported in one paragraph with exit status 2."""


def cmd_models(args, out: Console) -> int:
    from . import models

    table = Table(title="arasc model zoo", title_justify="left")
    for column in ("name", "parameters", "description"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for entry in models.ZOO.values():
        params = f"{entry.reference_params:,}" if entry.reference_params else ""
        table.add_row(entry.name, params, entry.summary)
    out.print(table)
    return EXIT_OK


def calibration_inputs(args, example_inputs) -> list[tuple]:
    """--calib FILE.npy (one sample per row, single-input models), else the example inputs."""
    return sample_batches(getattr(args, "calib", None), "--calib", example_inputs)


def sample_batches(path: str | None, flag: str, example_inputs) -> list[tuple]:
    """Input tuples from an .npy of samples, one per row, in batches of the traced batch size.
    The file is memory-mapped, so a large calibration set is read batch by batch, not held."""
    if not path:
        return [tuple(example_inputs)]
    import numpy as np

    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: no such file")
    try:  # memory-mapped: the header's shape is checked before any data is read
        samples = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # numpy raises many kinds on a damaged file
        raise UsageError(f"{flag} {path}: not a readable .npy array ({type(err).__name__}: {err})") from None
    if not isinstance(samples, np.ndarray) or samples.dtype.kind not in "fiub":
        raise UsageError(f"{flag} {path}: not an .npy array of numbers")
    if len(example_inputs) != 1:
        raise UsageError(f"{flag} {path}: the model takes {len(example_inputs)} inputs; {flag} holds one")
    shape = tuple(example_inputs[0].shape)
    batch = shape[0] if shape else 1  # the graph was traced at this batch size: calibrate in batches of it
    if samples.ndim != len(shape) or tuple(samples.shape[1:]) != shape[1:] or len(samples) < batch:
        raise UsageError(f"{flag} {path}: shape {list(samples.shape)}, expected [N, "
                         f"{', '.join(map(str, shape[1:]))}] with N >= {batch} (the traced batch size)")
    samples = np.array(samples, dtype=np.asarray(example_inputs[0]).dtype)
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        raise UsageError(f"{flag} {path}: holds NaN or infinite values, which calibrate no scale")
    return [(samples[i:i + batch],) for i in range(0, len(samples) - batch + 1, batch)]


def hardware(args):
    from .isa.hardware import BUNDLED_HARDWARE, bundled_hardware, default_hardware, load_hardware

    path = getattr(args, "hw", None)
    if path in BUNDLED_HARDWARE and not os.path.exists(path):  # a bundled chip by name: --hw aras-differential
        return bundled_hardware(path)
    return load_hardware(path) if path else default_hardware()


def stages(args, stop_after=None, show=None):
    """The driver's instrumentation from --print-after and --dump-dir."""
    from .stages import Stages

    try:
        return Stages(tuple(args.print_after or ()), args.dump_dir, stop_after, show)
    except ValueError as err:
        raise UsageError(str(err)) from None
    except OSError as err:
        raise UsageError(f"--dump-dir {args.dump_dir}: {err.strerror}") from None


def cmd_ir(args, out: Console) -> int:
    from .compile import compile_source
    from .loader import load_source
    from .options import IR_STAGES, options_from_args
    from .passes.tile import summarize_tiling
    from .stages import Stopped
    from .summary import summarize

    after = args.after or "lower"
    if after not in IR_STAGES + ("all",):
        raise UsageError(f"--after {after}: no such pass; stages with IR, in order: {', '.join(IR_STAGES)}, or all")
    hw = hardware(args)

    def show(stage, model):
        table = Table(title=f"{model.graph.name} after {stage}", title_justify="left", show_header=False)
        for key, value in summarize(model).rows():
            table.add_row(key, value)
        if stage == "tile":
            for key, value in summarize_tiling(model, hw).rows():
                table.add_row(key, value)
        out.print(table)

    args.print_after = (after,)
    run = stages(args, stop_after=IR_STAGES[-1] if after == "all" else after, show=show if args.summary else None)
    source = load_source(args.model)
    try:
        compile_source(source, hw, "unused.arasw", options_from_args(args),
                       calibration_inputs(args, source.example_inputs), run)
    except Stopped:
        return EXIT_OK
    raise AssertionError("the driver did not stop after the last IR stage")


def compiled_summary(compiled) -> str:
    from .compile import optimizations

    p = compiled.program
    return (f"{len(p.layers)} crossbar layers, {len(p.write) + len(p.compute):,} instructions ({len(p.write):,} "
            f"write, {len(p.compute):,} compute); {optimizations(compiled)}")


def cmd_compile(args, out: Console) -> int:
    from .compile import compile_source, output_paths, weights_name, write_compiled
    from .loader import load_source
    from .options import options_from_args
    from .runtime import progress

    if not args.output.endswith(".aras"):
        raise UsageError(f"-o {args.output}: the program file must end in .aras")
    output_paths(args.output, weights_name(args.output))  # refused before any work, not after
    options, run = options_from_args(args), stages(args)
    with progress.display(None if args.quiet else args.terminal):
        progress.stage("build model")
        source = load_source(args.model)
        compiled = compile_source(source, hardware(args), weights_name(args.output), options,
                                  calibration_inputs(args, source.example_inputs), run)
    weights_path = write_compiled(compiled, args.output)
    out.print(f"wrote {args.output} and {weights_path} ({len(compiled.weights):,} bytes): {compiled_summary(compiled)}")
    return EXIT_OK


def cmd_run(args, out: Console) -> int:
    from .runtime import progress
    from .runtime.report import adc_error, print_run, write_plot, write_report, write_trace
    from .runtime.run import run_file

    if args.inferences < 1:
        raise UsageError("--inferences must be at least 1")
    if args.timing_only and (args.output or args.adc_bits or args.adc == "chip"):
        raise UsageError("--timing-only computes no activations: it cannot write --output or model an ADC")
    if args.adc_bits is not None and args.adc == "ideal":
        raise UsageError("--adc ideal and --adc-bits N contradict each other: give one")
    adc = "ideal" if args.timing_only else args.adc
    from .isa.atomic import check_output_path

    for flag in ("output", "report", "trace", "plot"):  # refused before any work, not after
        if getattr(args, flag):
            check_output_path(getattr(args, flag), f"--{flag}")
    with progress.display(None if args.quiet else args.terminal):
        result = run_file(args.program, args.input, args.hw, inferences=args.inferences, adc=adc,
                          adc_bits=args.adc_bits, adc_lsb=args.adc_lsb, compute=not args.timing_only)
        result.adc_choice = "--adc-bits" if args.adc_bits is not None else adc
        if result.machine.bit_serial.adc_bits is not None:  # never silently: what the finite ADC did to the outputs
            result.adc_error = adc_error(result, run_file(args.program, args.input, args.hw))
    if args.output:
        result.save_output(args.output)
    if args.report:
        write_report(result, args.report)
    if args.trace:
        write_trace(result, args.trace)
    if args.plot:
        write_plot(result, args.plot)
    print_run(result, out)
    return EXIT_OK


def cmd_compare(args, out: Console) -> int:
    """Float IR against the integer program, layer by layer (arasc/compare.py)."""
    import json

    import numpy as np

    from .compare import adc_rows, all_values, compare, interpreter_values
    from .frontend import capture_model, lower
    from .isa.hardware import BUNDLED_HARDWARE
    from .loader import load_source
    from .options import options_from_args
    from .passes.quantize import Quantize

    if args.adc_bits is not None and args.engine != "interpreter":
        raise UsageError("--adc-bits models the chip's ADC: it needs --engine interpreter")
    options = options_from_args(args)
    adc = []
    source = load_source(args.model)
    model = lower(capture_model(source.module, source.example_inputs, source.capture_path(options.frontend)),
                  source.name)
    calibration = calibration_inputs(args, source.example_inputs)
    inputs = sample_batches(args.input, "--input", source.example_inputs)
    calibration_arrays = tuple(tuple(np.asarray(x) for x in c) for c in calibration)
    quantized = Quantize(calibration=calibration_arrays, **options.quantization()).rewrite(model, hardware(args))
    if args.engine == "interpreter":
        import tempfile

        from .compile import compile_model, weights_name, write_compiled
        from .runtime.run import load_program

        hw = hardware(args)
        with tempfile.TemporaryDirectory() as folder:
            path = f"{folder}/{model.graph.name}.aras"
            compiled = compile_model(model, hw, calibration, source.example_inputs, weights_name(path), options)
            write_compiled(compiled, path)
            program, weights, hw = load_program(path, None if args.hw in BUNDLED_HARDWARE else args.hw)
            values = [interpreter_values(program, weights, hw, x, args.adc_bits) for x in inputs]
            if args.adc_bits is not None:
                adc = adc_rows(program, weights, hw, inputs, args.adc_bits)
    else:
        from .passes.slice_sparsity import SliceSparsity
        from .passes.weight_bits import WeightBits

        narrow = WeightBits(options.weight_bits, options.weight_bits_budget, calibration_arrays,
                            options.squeeze_out != "off").run(quantized.model, hardware(args))
        narrow = SliceSparsity(options.squeeze_out == "lossy", options.squeeze_out_budget,
                               calibration_arrays).run(narrow, hardware(args))
        values = [all_values(narrow, x) for x in inputs]
    rows = compare(model, quantized.params, quantized.sources, values, inputs)
    table = Table(title=f"{model.graph.name}: {args.engine} against float, {len(inputs)} input(s)",
                  title_justify="left")
    for column in ("layer", "op", "codes", "cosine", "SQNR dB", "float range", "clipped", "scale"):
        table.add_column(column, justify="left" if column in ("layer", "op", "codes", "scale") else "right")
    for row in rows:
        mark = " <- error jumps" if row.jump else ""
        table.add_row(row.layer + mark, row.op, row.dtype, f"{row.cosine:.5f}", f"{row.sqnr_db:.1f}",
                      f"[{row.low:.3g}, {row.high:.3g}]", f"{row.clipped:.2%}", row.scale,
                      style="bold red" if row.jump else None)
    if not out.is_terminal:   # a file or a pipe: full layer names, one row per line
        out = Console(width=240, highlight=False)
    out.print(table)
    if adc:
        out.print(_adc_table(adc, model.graph.name, args.adc_bits, len(inputs)))
    if args.json:
        from .isa.atomic import write_bytes_atomically

        text = json.dumps({"model": model.graph.name, "engine": args.engine, "adc_bits": args.adc_bits,
                           "inputs": len(inputs), "layers": [row.as_dict() for row in rows],
                           "adc_layers": [row.as_dict() for row in adc]}, indent=1)
        write_bytes_atomically(args.json, (text + "\n").encode(), "--json")
    return EXIT_OK


def _adc_table(rows, model: str, bits: int, inputs: int) -> Table:
    table = Table(title=f"{model}: the {bits}-bit ADC against an ideal one, per crossbar layer, {inputs} input(s)",
                  title_justify="left")
    for column in ("layer", "slice bits", "samples", "conversions", "clipped", "rerun steps", "codes changed",
                   "mean |error|", "cosine"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in rows:
        table.add_row(row.layer, str(row.slice_bits), f"{row.samples:,}", f"{row.conversions:,}",
                      f"{row.clipped:,} ({row.clipped / max(row.samples, 1):.2%})", f"{row.rerun_steps:,}",
                      f"{row.codes_changed:.2%}", f"{row.mean_code_error:.3f}", f"{row.output_cosine:.5f}")
    return table


def cmd_sweep(args, out: Console) -> int:
    """A design-space sweep on Ray (arasc/sweep/, docs/sweeps.md)."""
    from .isa.atomic import check_output_path
    from .reproduce import cache_folder
    from .sweep.points import grid, sample
    from .sweep.runner import Progress, RayExecutor, import_ray
    from .sweep.spec import load_spec
    from .sweep.sweep import columns, run_sweep
    from .sweep.table import ResultTable

    import_ray()  # before any work: without Ray, say how to install it
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot draws with matplotlib: install the plot extra (pip install -e '.[plot]')")
    spec = load_spec(args.spec)
    out_path = args.out or os.path.splitext(args.spec)[0] + ".csv"
    if not out_path.endswith(".csv"):
        raise UsageError(f"--out {out_path}: the table is CSV; give a name ending in .csv")
    check_output_path(out_path, "--out")
    stem = os.path.splitext(out_path)[0]
    plots = (stem + "-pareto.png", stem + "-effects.png")
    if args.plot:
        for path in plots:
            check_output_path(path, "--plot")
    points = sample(spec, args.samples) if args.samples else grid(spec)
    table = ResultTable(out_path, columns(spec))
    cache = args.cache or str(cache_folder(None) / "sweep-programs")
    executor = _LazyRay(lambda: RayExecutor(args.address, args.workers))
    outcome = None
    try:
        outcome = run_sweep(spec, points, table, executor, cache, args.retry_failed,
                            lambda total: Progress("sweep", total, None if args.quiet else args.terminal))
    except KeyboardInterrupt:
        out.print(f"interrupted: the finished points are in {out_path}; run the same command to do the rest")
        raise
    workers = f" on {executor.started.workers} Ray worker{'s' if executor.started.workers > 1 else ''}" if executor.started else ""
    out.print(f"{outcome.points} points: {outcome.skipped} already in {out_path}, {outcome.ran} run{workers} "
              f"({len(outcome.failed)} failed) in {outcome.seconds:.1f} s")
    for point, error in outcome.failed[:5]:
        out.print(f"  failed {point}: {error}")
    if len(outcome.failed) > 5:
        out.print(f"  ... and {len(outcome.failed) - 5} more (the error column of {out_path})")
    if args.plot:
        from .sweep.plot import write_plots

        write_plots(table.rows(), [axis.name for axis in spec.swept], *plots)
        out.print(f"wrote {plots[0]} and {plots[1]}")
    return EXIT_OK


class _LazyRay:
    """The Ray executor, started at the first task: a sweep whose points are all in the table
    starts no Ray."""

    def __init__(self, start):
        self.start, self.started = start, None

    def _ray(self):
        if self.started is None:
            self.started = self.start()
        return self.started

    @property
    def workers(self) -> int:
        return self._ray().workers

    @property
    def pending(self) -> int:
        return self.started.pending if self.started else 0

    def put(self, value):
        return self._ray().put(value)

    def submit(self, *task) -> None:
        self._ray().submit(*task)

    def next_done(self):
        return self._ray().next_done()

    def close(self) -> None:
        if self.started:
            self.started.close()


def cmd_evaluate(args, out: Console) -> int:
    """A task metric of a program over a data set, in Ray tasks (arasc/evaluate.py)."""
    import json
    import time

    import numpy as np

    from .evaluate import check_outputs, evaluate_range, float_outputs, load_dataset, metrics, pack_program, ranges
    from .isa.atomic import check_output_path
    from .sweep.runner import Progress, RayExecutor, import_ray

    import_ray()
    if args.json:
        check_output_path(args.json, "--json")
    start = time.perf_counter()
    packed = pack_program(args.program, args.hw)
    from .evaluate import unpack_program
    from .runtime.run import adc_bits_for

    program, _, hw = unpack_program(packed)
    if args.adc_bits is not None and args.adc == "ideal":
        raise UsageError("--adc ideal and --adc-bits N contradict each other: give one")
    adc_bits = adc_bits_for(args.adc, args.adc_bits, hw)
    if len(program.outputs) != 1:
        raise UsageError(f"{args.program}: the program has {len(program.outputs)} outputs; evaluate scores "
                         f"programs with one")
    dataset = load_dataset(args.dataset, program.inputs, args.limit)
    check_outputs(dataset, program.outputs[0].type.shape)
    batch = program.inputs[0].type.shape[0]
    executor = RayExecutor(args.address, args.workers)
    try:
        packed_ref, inputs_ref = executor.put(packed), executor.put(dataset.inputs)
        parts = ranges(dataset.size, batch, executor.workers * 4)
        for first, last in parts:
            executor.submit(first, evaluate_range, packed_ref, inputs_ref, first, last, adc_bits)
        found = {}
        with Progress("evaluate", len(parts), None if args.quiet else args.terminal) as progress:
            while executor.pending:
                first, value, error = executor.next_done()
                if error is not None:
                    raise RuntimeError(f"the task of samples {first}.. failed: {error}")
                found[first] = value
                progress.advance(False)
        workers = executor.workers
    finally:
        executor.close()
    outputs = np.concatenate([found[first] for first, _ in parts])
    chip = metrics(outputs, dataset)
    reference = metrics(float_outputs(args.compare_float, dataset, batch), dataset) if args.compare_float else {}
    seconds = time.perf_counter() - start
    adc = "ideal ADC" if adc_bits is None else f"{adc_bits}-bit ADC"
    table = Table(title=f"{program.name} on {args.dataset}, {adc}", title_justify="left",
                  caption=f"{dataset.size} samples in {len(parts)} tasks on {workers} Ray workers, {seconds:.1f} s",
                  caption_justify="left")
    table.add_column("metric")
    table.add_column("chip (interpreter)", justify="right")
    if reference:
        table.add_column(f"float ({args.compare_float})", justify="right")
    for name, value in chip.items():
        table.add_row(name, f"{value:.4f}", *([f"{reference[name]:.4f}"] if reference else []))
    out.print(table)
    if args.json:
        from .isa.atomic import write_bytes_atomically

        text = json.dumps({"program": program.name, "dataset": args.dataset, "samples": dataset.size,
                           "adc_bits": adc_bits, "chip": chip, "float": reference or None,
                           "seconds": seconds, "tasks": len(parts), "workers": workers}, indent=1)
        write_bytes_atomically(args.json, (text + "\n").encode(), "--json")
    return EXIT_OK


def cmd_reproduce(args, out: Console) -> int:
    from . import models as zoo
    from .isa.atomic import check_output_path
    from .reproduce import MODELS, cache_folder, reproduce

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("arasc reproduce draws its figures with matplotlib: install the plot extra "
                         "(pip install -e '.[plot]')")
    chosen = tuple(args.models or MODELS)
    unknown = [m for m in chosen if m not in zoo.ZOO]
    if unknown:
        raise UsageError(f"--models: {', '.join(unknown)}: not in the zoo (see `arasc models`)")
    unpublished = [m for m in chosen if m.removesuffix("-small") not in MODELS]
    if unpublished:
        raise UsageError(f"--models: {', '.join(unpublished)}: the paper gives no figures for it; choose among "
                         f"{', '.join(MODELS)} or their -small variants")
    check_output_path(args.out, "--out")
    seconds = reproduce(chosen, cache_folder(args.cache), args.reuse, args.out, args.figures, args.scalesim,
                        args.quiet)
    out.print(f"wrote {args.out} and its figures in {args.figures} ({seconds / 60:.1f} min)")
    return EXIT_OK


def cmd_demo(args, out: Console) -> int:
    """The main job on one model: compile, run on the interpreter, compare with PyTorch."""
    import tempfile

    import numpy as np

    from .compile import compile_source, weights_name, write_compiled
    from .loader import load_source
    from .options import options_from_args
    from .runtime import progress
    from .runtime.report import cosine, print_run
    from .runtime.run import run_file

    options, run = options_from_args(args), stages(args)
    with progress.display(None if args.quiet else args.terminal):
        progress.stage("build model")
        source = load_source(args.model)
        expected = source.reference_outputs()
        with tempfile.TemporaryDirectory() as folder:
            path = f"{folder}/{source.name}.aras"
            compiled = compile_source(source, hardware(args), weights_name(path), options,
                                      calibration_inputs(args, source.example_inputs), run)
            write_compiled(compiled, path)
            out.print(f"compiled {source.name}: {compiled_summary(compiled)}")
            result = run_file(path, None, args.hw, inferences=2)
    print_run(result, out)
    table = Table(title="interpreter vs PyTorch float", title_justify="left")
    for column in ("output", "shape", "cosine", "max |diff|", "argmax agrees"):
        table.add_column(column)
    for (port, got), reference in zip(result.outputs.items(), expected, strict=True):
        want = reference.numpy().astype(np.float64).ravel()
        got64 = got.astype(np.float64).ravel()
        table.add_row(port, str(list(got.shape)), f"{cosine(want, got64):.5f}", f"{np.abs(want - got64).max():.4f}",
                      str(bool(np.argmax(want) == np.argmax(got64))))
    out.print(table)
    return EXIT_OK


def add_driver_flags(p, stages_ir: bool = True) -> None:
    """--print-after, --dump-dir and --quiet: what the driver shows while it works."""
    from .options import IR_STAGES

    group = p.add_argument_group("what the compiler shows")
    if stages_ir:
        group.add_argument("--print-after", action="append", metavar="PASS", help="print the IR after this stage "
                           f"to stdout: {', '.join(IR_STAGES)}, or all (repeatable)")
        group.add_argument("--dump-dir", metavar="DIR", help="write the IR after every stage into DIR, one numbered "
                           "file each; a failing pass leaves the IR it was given there")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress display on stderr (it shows only "
                       "when stderr is a terminal)")


def int_in(low: int, high: int):
    """An argparse type: an integer in low..high (argparse reports others, naming the flag, exit 2)."""
    def parse(text: str) -> int:
        if not text.lstrip("-").isdigit() or len(text) > 12 or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer in {low}..{high}")
        return int(text)
    parse.__name__ = "integer"
    return parse


def add_adc_flags(p) -> None:
    """--adc and --adc-bits of the commands that run programs (run, evaluate)."""
    p.add_argument("--adc", choices=("auto", "chip", "ideal"), default="auto", help="the ADC the crossbars are "
                   "read with: chip, the hardware file's (adc_bits); ideal, none (an idealisation); auto (default), "
                   "the chip's where it reads the cells faithfully (signed one-bit slices, e.g. "
                   "aras-differential-1bit), else ideal: the published chip's unsigned cells saturate its 6-bit ADC "
                   "(docs/adc.md)")
    p.add_argument("--adc-bits", type=int_in(1, 32), metavar="N", help="model a finite ADC of N bits, 1..32, "
                   "instead of the chip's")


def add_inputs(p) -> None:
    p.add_argument("--hw", metavar="FILE", help="hardware description (default: the bundled ARAS chip)")
    p.add_argument("--calib", metavar="FILE.npy", help="calibration inputs, one sample per row, used in batches of "
                   "the traced batch size (default: the example inputs)")


def build_parser() -> argparse.ArgumentParser:
    from .options import IR_STAGES, add_option_flags

    parser = argparse.ArgumentParser(prog="arasc", description="Compiler and simulator for the ARAS ReRAM "
                                     "processing-in-memory DNN accelerator.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_help = "a zoo name (see `arasc models`), path/to/file.py:factory, or a torch.export archive (.pt2)"

    p = sub.add_parser("models", help="list the model zoo", description="List the bundled model zoo.")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("ir", help="print a model's layer IR", description="Print the layer IR of MODEL after "
                       "lowering or after a compiler pass.")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("--after", metavar="PASS", help="show the IR after this stage: lower (default), or any pass up "
                   "to tile (the list: arasc compile --help, --print-after); 'all' shows every stage")
    p.add_argument("--summary", action="store_true", help="print layer and weight counts instead of the IR text")
    add_inputs(p)
    add_option_flags(p, stages=("capture", *IR_STAGES))
    p.set_defaults(run=cmd_ir, print_after=None, dump_dir=None, quiet=True)

    p = sub.add_parser("compile", help="compile a model to a .aras program", description="Compile MODEL to an "
                       ".aras program and its weight file (OUT.arasw beside it).")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("-o", "--output", metavar="OUT.aras", required=True, help="program to write")
    add_inputs(p)
    add_option_flags(p)
    add_driver_flags(p)
    p.set_defaults(run=cmd_compile)

    p = sub.add_parser("compare", help="per-layer error of the integer program against float",
                       description="Run the float IR and the integer program on the same inputs and print, per "
                       "layer, the cosine and SQNR of the dequantized value against float, the float range, the "
                       "fraction clipped and the scale; the first layer where the error jumps is marked.")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("--input", metavar="X.npy", help="inputs to compare on, one per row (default: the example inputs)")
    p.add_argument("--calib", metavar="FILE.npy", help="calibration inputs, one per row (default: example inputs)")
    p.add_argument("--engine", choices=("reference", "interpreter"), default="reference", help="the integer side: "
                   "the integer reference executor (default) or the compiled .aras program on the interpreter")
    p.add_argument("--adc-bits", type=int_in(1, 32), metavar="N", help="with --engine interpreter: a finite ADC of N "
                   "bits, and a second table of what it did per crossbar layer (samples, conversions, clipped, error)")
    p.add_argument("--json", metavar="FILE", help="write the table as JSON")
    p.add_argument("--hw", metavar="FILE", help="hardware description, or a bundled chip's name (default: the bundled "
                   "ARAS chip; aras-differential, aras-differential-1bit: docs/adc.md)")
    add_option_flags(p, stages=("capture", "quantize", "shift-weights", "center-offset", "input-slicing",
                                "dynamic-precision", "weight-bits", "squeeze-out", "weight-slicing"))
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("run", help="run a .aras program on the interpreter-simulator",
                       description="Verify and execute an .aras program: outputs and write statistics.")
    p.add_argument("program", metavar="PROG.aras")
    p.add_argument("--input", metavar="X.npy", help="model input as given to PyTorch (float image, int64 ids); "
                   "default: the example input stored with the program")
    p.add_argument("--output", metavar="Y.npy", help="write the dequantized float output here")
    p.add_argument("--hw", metavar="FILE", help="hardware description, if not a bundled one")
    add_adc_flags(p)
    p.add_argument("--adc-lsb", type=int_in(1, 1 << 30), default=1, metavar="L", help="ADC step in partial-sum "
                   "units (default 1)")
    p.add_argument("--inferences", type=int_in(1, 1000), default=2, metavar="N", help="run N inferences on one chip and report "
                   "the last (default 2: steady state, the cells start as the first inference left them)")
    p.add_argument("--timing-only", action="store_true", help="simulate time, energy and writes without computing "
                   "activations (they change none of them); no outputs")
    p.add_argument("--report", metavar="R.json", help="write cycles, inferences/s, energy and write figures as JSON")
    p.add_argument("--trace", metavar="T.json", help="write a Chrome/Perfetto trace (open in ui.perfetto.dev)")
    p.add_argument("--plot", metavar="P.png", help="draw the schedule as a Gantt chart and the energy breakdown")
    add_driver_flags(p, stages_ir=False)
    p.set_defaults(run=cmd_run)

    p = sub.add_parser("sweep", help="a design-space sweep over models, hardware fields and options, on Ray",
                       description="Compile and time every point of a sweep spec (models x hardware-file fields x "
                       "compile options, or --samples N of them), as Ray tasks; each finished point is a row of "
                       "the CSV table, and a re-run skips the points already there (docs/sweeps.md). Needs the "
                       "sweep extra (Ray).")
    p.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (docs/sweeps.md)")
    p.add_argument("--samples", type=int_in(1, 1_000_000), metavar="N", help="N points drawn from the spec's "
                   "space (Latin hypercube, or random: the spec's `sampling`) instead of the full product")
    p.add_argument("--address", metavar="ADDR", help="the Ray cluster to run on (ray://host:10001, or auto); "
                   "default: a local Ray on this machine")
    p.add_argument("--workers", type=int_in(1, 100_000), metavar="N", help="tasks at once (default: one per core, "
                   "or the cluster's CPUs)")
    p.add_argument("--out", metavar="TABLE.csv", help="the result table (default: SPEC with .csv)")
    p.add_argument("--plot", action="store_true", help="draw TABLE-pareto.png (inferences/s against energy per "
                   "inference) and TABLE-effects.png (each swept field's effect)")
    p.add_argument("--cache", metavar="DIR", help="compiled programs by content hash (default "
                   "~/.cache/arasc/sweep-programs)")
    p.add_argument("--retry-failed", action="store_true", help="run the points that failed before again")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_sweep)

    p = sub.add_parser("evaluate", help="a program's accuracy over a data set, in Ray tasks",
                       description="Run PROG.aras on the interpreter over a data set (an .npz of inputs with "
                       "labels or targets, or a folder of them) split into Ray tasks, and report top-1/top-5 "
                       "accuracy or the outputs' cosine to the targets (docs/sweeps.md). Needs the sweep extra.")
    p.add_argument("program", metavar="PROG.aras")
    p.add_argument("--dataset", required=True, metavar="DIR|FILE.npz", help="inputs keyed by input name (or x), "
                   "and labels (classes) or targets (reference outputs), one sample per row")
    p.add_argument("--compare-float", metavar="MODEL", help="also score the float PyTorch model: " + model_help)
    p.add_argument("--hw", metavar="FILE", help="hardware description, if not a bundled one")
    add_adc_flags(p)
    p.add_argument("--limit", type=int_in(1, 1 << 40), metavar="N", help="the first N samples only")
    p.add_argument("--address", metavar="ADDR", help="the Ray cluster to run on (default: a local Ray)")
    p.add_argument("--workers", type=int_in(1, 100_000), metavar="N", help="tasks at once (default: one per core)")
    p.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("reproduce", help="reproduce the paper's evaluation (section VII): docs/paper.md and figures",
                       description="Compile and time the five zoo models at full size in the paper's four "
                       "configurations, the paper profile and a TPU-like baseline; write the side-by-side "
                       "document and its PNG figures (docs/paper.md says how long it takes).")
    p.add_argument("--models", nargs="+", metavar="MODEL", help="zoo models (default: the paper's five)")
    p.add_argument("--out", default="docs/paper.md", metavar="FILE.md", help="the document (default docs/paper.md)")
    p.add_argument("--figures", default="docs/figures", metavar="DIR", help="folder for the PNG figures "
                   "(default docs/figures)")
    p.add_argument("--cache", metavar="DIR", help="measurements and SCALE-Sim's environment (default ~/.cache/arasc)")
    p.add_argument("--reuse", action="store_true", help="reuse cached measurements of a model instead of measuring")
    p.add_argument("--scalesim", action="store_true", help="cross-check the TPU-like model against SCALE-Sim on a "
                   "few layers, in its own environment (created in the cache folder; needs PyPI)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_reproduce)

    p = sub.add_parser("demo", help="compile and run a model, compare with PyTorch",
                       description="Compile MODEL, run it on the interpreter-simulator and compare its outputs "
                       "with PyTorch float.")
    p.add_argument("model", metavar="MODEL", nargs="?", default="resnet50", help=model_help)
    add_inputs(p)
    add_option_flags(p)
    add_driver_flags(p)
    p.set_defaults(run=cmd_demo)
    return parser


# (module, class) of every bad-input error: exit 2. Looked up among the modules already imported
# (an error can only come from one), so that `arasc run` never imports torch to report one.
BAD_INPUT_ERRORS = (
    ("arasc.backend.emit", "BackendError"), ("arasc.frontend", "FrontendError"), ("arasc.ir.parser", "IRParseError"),
    ("arasc.ir", "VerifyError"), ("arasc.isa.atomic", "OutputPathError"), ("arasc.isa.hardware", "HardwareConfigError"),
    ("arasc.isa.parser", "ProgramError"), ("arasc.isa.weights", "WeightFileError"), ("arasc.loader", "ModelLoadError"),
    ("arasc.passes.quantize", "QuantizeError"), ("arasc.passes.center_offset", "CenterOffsetError"),
    ("arasc.passes.squeeze_out", "SqueezeOutError"),
    ("arasc.passes.slice_sparsity", "SliceSparsityError"), ("arasc.passes.weight_bits", "WeightBitsError"),
    ("arasc.passes.weight_slicing", "WeightSlicingError"), ("arasc.runtime.run", "RuntimeInputError"), ("arasc.evaluate", "DatasetError"),
    ("arasc.sweep.spec", "SweepSpecError"), ("arasc.sweep.table", "TableError"),
    ("arasc.sweep.runner", "RayMissingError"), ("arasc.sweep.runner", "RayStartError"),
    ("arasc.runtime.verify", "VerifyError"),
)


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """The bad-input error classes of the modules imported so far, and UsageError."""
    found = [getattr(sys.modules[module], name, None) for module, name in BAD_INPUT_ERRORS if module in sys.modules]
    return (UsageError, *(cls for cls in found if cls is not None))


@contextlib.contextmanager
def captured_stderr():
    """Collect what is written to file descriptor 2 (torch writes its own tracebacks and warnings
    there, from C++ too) into a temporary file; yields a function returning the text so far."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            def text() -> str:
                sys.stderr.flush()
                sink.seek(0)
                return sink.read().decode("utf-8", errors="replace")
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def report(kind: str, message: str) -> None:
    """An error, in plain text: a path or a source line holding `[/]` is printed as it is."""
    sys.stderr.write(f"{kind}: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    from .openmp import passive_waits

    passive_waits()   # before numpy and torch load (arasc/openmp.py)
    args = build_parser().parse_args(argv)
    # markup, emoji and highlighting off: the console prints arasc's tables and user strings as they are
    out = Console(highlight=False, markup=False, emoji=False)
    debug = bool(os.environ.get("ARASC_DEBUG"))
    with contextlib.ExitStack() as stack:
        # stderr is captured below: a progress bar goes to the terminal the command was started from
        args.terminal = stack.enter_context(os.fdopen(os.dup(2), "w")) if os.isatty(2) else None
        library_output = stack.enter_context(captured_stderr()) if not debug else (lambda: "")
        try:
            status, problem = args.run(args, out), None
        except bad_input_errors() as e:
            status, problem = EXIT_BAD_INPUT, ("error", str(e))
        except KeyboardInterrupt:
            status, problem = 130, None
        except MemoryError:
            status, problem = EXIT_BAD_INPUT, ("error", "out of memory: the model or program is too large for "
                                               "this machine")
        except Exception as e:  # an arasc bug, not the user's
            if debug:
                raise
            status, problem = EXIT_INTERNAL, ("internal error", f"{type(e).__name__}: {e}\n(set ARASC_DEBUG=1 for "
                                              f"the traceback; please report it)")
        captured = library_output()
    if status == EXIT_OK and captured:
        sys.stderr.write(captured)  # warnings of a run that worked are the user's to see
    if problem:
        report(*problem)
    return status


def entry() -> None:
    """The `arasc` command: `main`, then exit without tearing the interpreter down. By then every
    file is written and closed and the output is flushed; unloading torch's modules (and dynamo's,
    once torch.export has run) would take the user another 0.4-0.9 s, for nothing."""
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    entry()
