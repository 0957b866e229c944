"""Every choice `arasc compile` makes on the user's behalf, in one frozen dataclass.

The command line is generated from it: each field is one flag (`weight_center` becomes
`--weight-center`), its metadata gives the help text, the choices or the parser, and the stage
of the driver it configures (`arasc/compile.py`). Adding an option is adding one field here and
reading it in the driver; the flag, its default and its help text follow.

Defaults apply all of the paper's optimizations (V-A bank selection, V-B replication, V-C
weight-mean shifting)."""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The driver's stages whose product is the layer IR, in order: the ones `--print-after`,
# `--dump-dir` and `arasc ir --after` can show (arasc/compile.py runs them).
IR_STAGES = ("lower", "quantize", "shift-weights", "center-offset", "input-slicing", "dynamic-precision", "weight-bits",
             "slice-sparsity", "squeeze-out", "weight-slicing", "tile")


def _weight_center(text: str) -> int | str | None:
    """--weight-center: auto, none, or one of the pass's centers (imported only when a code is given:
    the pass module pulls in torch, and `arasc --help` should not wait for it)."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    from .passes.shift_weights import CENTERS

    if not text.isdigit() or int(text) not in CENTERS:
        raise argparse.ArgumentTypeError(f"{text!r}: auto, none, or one of {', '.join(map(str, CENTERS))}")
    return int(text)


def _smooth(text: str) -> float | str:
    """--smooth: auto, or an alpha from 0 (off) to 1."""
    if text == "auto":
        return text
    try:
        alpha = float(text)
    except ValueError:
        alpha = -1.0
    if not 0 <= alpha <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: auto, or an alpha from 0 (off) to 1")
    return alpha


def _weight_bits(text: str) -> int | str:
    """--weight-bits: 1..8, or auto."""
    if text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= 8:
        raise argparse.ArgumentTypeError(f"{text!r}: auto, or an integer from 1 to 8")
    return int(text)


def _slice_bits(text: str) -> int | str:
    """--weight-slice-bits: chip, auto, or 1..4."""
    if text in ("chip", "auto"):
        return text
    if not text.isdigit() or not 1 <= int(text) <= 4:
        raise argparse.ArgumentTypeError(f"{text!r}: chip, auto, or an integer from 1 to 4")
    return int(text)


def _budget(text: str) -> float:
    """--weight-bits-budget: a loss of output cosine, 0 <= b < 1."""
    try:
        budget = float(text)
    except ValueError:
        budget = -1.0
    if not 0 <= budget < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a loss of output cosine from 0 to 1 (e.g. 0.001)")
    return budget


def option(default: Any, help: str, stage: str, choices: tuple | None = None,
           parse: Callable[[str], Any] | None = None, metavar: str | None = None) -> Any:
    """A CompileOptions field: its default, the flag's help text, and the driver stage it configures
    ("capture", a pass name, "replication", "schedule" or "banks")."""
    meta = {"help": help, "stage": stage, "choices": choices, "parse": parse, "metavar": metavar}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CompileOptions:
    frontend: str = option("auto", "capture with torch.fx, torch.export, or fx falling back to export",
                           "capture", choices=("auto", "fx", "export"))
    weight_scales: str = option("channel", "weight scales and zero points per output channel or per layer",
                                "quantize", choices=("channel", "tensor"))
    weight_zero_point: str = option(
        "auto", "weight codes with their own zero point over each range (asymmetric) or centred on code 128 "
        "(symmetric, scale max|w|/127): auto is symmetric on chips with differential cells, whose pairs hold q - 128, "
        "so that bitline sums stay small enough for the ADC (docs/adc.md)", "quantize",
        choices=("auto", "asymmetric", "symmetric"))
    observer: str = option("mse", "how activation ranges are chosen from calibration: least squared error, "
                           "0.01%%/99.99%% percentiles, or the whole observed range", "quantize",
                           choices=("mse", "percentile", "minmax"))
    residual: str = option("wide", "the residual stream (adds and layer norm inputs) in int16 on the SFU, or uint8 "
                           "like every other value", "quantize", choices=("wide", "u8"))
    channel_groups: int = option(0, "scale groups for values between linear layers and tables (per-embedding-group "
                                 "quantization; 0: one scale per tensor)", "quantize", parse=int, metavar="G")
    smooth: float | str = option("auto", "SmoothQuant migration of activation outliers into the weights of the "
                                 "linear layers that read them: auto (alpha chosen per value by cross-validation "
                                 "on the calibration inputs), an alpha from 0 (off) to 1", "quantize",
                                 parse=_smooth, metavar="ALPHA")
    weight_center: int | str | None = option(
        "auto", "weight-mean shifting (paper V-C): auto (the center with the most skipped cells that keeps the "
        "outputs on the calibration inputs, if any), none, or one of the paper's six centers (88 to 168)",
        "shift-weights", parse=_weight_center, metavar="C")
    weight_shift: str = option("fit", "codes the shift pushes past 0..255: fit scales the layer's codes to stay "
                               "inside, clip clips them (the paper)", "shift-weights", choices=("fit", "clip"))
    center_offset: str = option("off", "RAELLA's Center+Offset: center every filter's codes so that the signed "
                                "offsets in differential cell pairs sum to near zero on the bitlines (needs a "
                                "differential --hw, e.g. aras-differential; replaces weight shifting; docs/adc.md)",
                                "center-offset", choices=("off", "on"))
    input_slice_bits: int = option(1, "RAELLA's speculative input slicing: input bits a crossbar step drives at once, "
                                   "recovering bit by bit where a sample saturates (1: plain bit-serial; docs/adc.md)",
                                   "input-slicing", parse=int, metavar="S")
    dynamic_precision: str = option("off", "ReDy's dynamic activation precision, lossless: each window runs only the "
                                    "input bit-planes up to its highest set bit, per APU row (docs/adc.md)",
                                    "dynamic-precision", choices=("off", "on"))
    weight_bits: int | str = option(
        8, "SME's bit-sparsity: requantize every crossbar layer's weights to N bits, so that the top weight slices "
        "are zero for every weight (replaces weight shifting; docs/tiling.md); auto: per layer 8, 6 or 4 bits, "
        "lowering the least sensitive layers where that saves APU rows, within --weight-bits-budget (needs "
        "--squeeze-out on)", "weight-bits", parse=_weight_bits, metavar="N")
    weight_bits_budget: float = option(
        0.001, "--weight-bits auto: the largest loss of output cosine against the 8-bit program, 1 - mean cosine "
        "over the calibration inputs (at most 16 of them), that the narrower layers may cost", "weight-bits",
        parse=_budget, metavar="B")
    squeeze_out: str = option("off", "SME's squeeze-out: crossbars whose weight slice is zero for every weight are "
                              "neither written nor computed (needs a bit-sliced --hw, e.g. aras-sme; docs/tiling.md); "
                              "lossy: first empty the lowest slices of the tiles where that saves APU rows at the least "
                              "cost, within --squeeze-out-budget, the other weights compensating (GPTQ)", "squeeze-out",
                              choices=("off", "on", "lossy"))
    squeeze_out_budget: float = option(
        0.003, "--squeeze-out lossy: the largest loss of output cosine against the program without it, 1 - mean "
        "cosine over the calibration inputs (at most 16 of them), that the emptied slices may cost", "squeeze-out",
        parse=_budget, metavar="B")
    weight_slice_bits: int | str = option(
        "chip", "RAELLA's adaptive weight slicing: weight bits per cell (pair) of every crossbar layer, at most the "
        "chip's cell_bits; chip: as the hardware file says; auto: per layer the widest slicing whose error through the "
        "chip's ADC on the calibration inputs stays within --weight-slice-budget (docs/adc.md)", "weight-slicing",
        parse=_slice_bits, metavar="B")
    weight_slice_budget: float = option(
        1e-4, "--weight-slice-bits auto: the largest relative squared error the ADC may add to a layer's products",
        "weight-slicing", parse=_budget, metavar="E")
    replication: str = option("adaptive", "adaptive: copies of the slowest layers' weights compute several windows "
                              "at once (paper V-B; aras scheduler only)", "replication",
                              choices=("adaptive", "none"))
    packing: str = option("adaptive", "adaptive: a transformer-like layer (short compute) computes on the blocks "
                          "already written when the rows run out, so that write rounds fill (aras scheduler only)",
                          "schedule", choices=("adaptive", "none"))
    scheduler: str = option("aras", "aras: write released rows at once, overlapping compute (paper IV, Fig. 8); "
                            "naive: write a layer, compute it, next (Fig. 7)", "schedule", choices=("aras", "naive"))
    banks: str = option("ilp", "Gbuffer banks per layer: ilp = least static power (paper V-A, OR-Tools), "
                        "greedy = smallest bank that fits", "banks", choices=("ilp", "greedy"))

    def __post_init__(self) -> None:
        """Options built in Python get the checks the command line gives flags."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta["choices"] is not None and value not in meta["choices"]:
                raise ValueError(f"CompileOptions.{f.name}={value!r}: choose one of {', '.join(meta['choices'])}")
            if meta["parse"] is not None and value != f.default:
                try:
                    meta["parse"]("none" if value is None else str(value))
                except argparse.ArgumentTypeError as err:
                    raise ValueError(f"CompileOptions.{f.name}: {err}") from None

    def quantization(self) -> dict[str, Any]:
        """The quantize pass's keyword arguments (arasc/passes/quantize.py)."""
        return {"weights": self.weight_scales, "weight_zero_point": self.weight_zero_point, "observer": self.observer,
                "residual": self.residual, "channel_groups": self.channel_groups, "smooth": self.smooth}

    def changed(self) -> dict[str, Any]:
        """The options that differ from the defaults."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_option_flags(parser: argparse.ArgumentParser, stages: tuple[str, ...] | None = None) -> None:
    """One flag per CompileOptions field (those configuring `stages`, or all)."""
    group = parser.add_argument_group("compile options")
    for f in dataclasses.fields(CompileOptions):
        meta = f.metadata
        if stages is not None and meta["stage"] not in stages:
            continue
        kwargs: dict[str, Any] = {"default": f.default, "dest": f.name, "metavar": meta["metavar"]}
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
        if meta["parse"] is not None:
            kwargs["type"] = meta["parse"]
        default = "none" if f.default is None else f.default
        group.add_argument(flag(f.name), help=f"{meta['help']} (default {default})", **kwargs)


def options_from_args(args: argparse.Namespace) -> CompileOptions:
    """The CompileOptions the parsed flags give; fields without a flag keep their defaults."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(CompileOptions) if hasattr(args, f.name)}
    return CompileOptions(**given)
