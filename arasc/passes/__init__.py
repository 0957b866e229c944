"""Compiler passes and the pipeline that runs them.

A pass is a small frozen dataclass (its fields are its options) with a `name`, what it
`requires` of the model and what it `ensures`, and `run(model, hw) -> model`. The pipeline
runs them in order, verifies the IR after each, and names the failing pass together with the
passes before it (as torch.fx's pass manager does)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..ir import Model, VerifyError, verify_model


class Pass(Protocol):
    name: str
    requires: tuple[str, ...]
    ensures: tuple[str, ...]

    def run(self, model: Model, hw) -> Model: ...


class PassError(RuntimeError):
    pass


@dataclass(frozen=True)
class Stage:
    """The model after the frontend or after one pass, for `arasc ir --after`."""

    name: str
    model: Model


def default_pipeline(calibration=None, weight_center="auto", weight_shift="fit",
                     quantization: dict | None = None) -> list[Pass]:
    """The passes `arasc compile` runs, in order. calibration: input tuples, for quantize's
    activation ranges and for checking the weight center; weight_center and weight_shift: the
    center and the method of ShiftWeights; quantization: options of Quantize (its scheme)."""
    import numpy as np

    from .quantize import Quantize
    from .shift_weights import ShiftWeights
    from .tile import Tile

    calibration = tuple(tuple(np.asarray(x) for x in inputs) for inputs in calibration or ())
    return [Quantize(calibration=calibration, **(quantization or {})), ShiftWeights(weight_center, calibration, method=weight_shift), Tile()]


def run_pipeline(model: Model, hw=None, passes: list[Pass] | None = None, stop_after: str | None = None) -> list[Stage]:
    """Run the passes; return the model after the frontend and after every pass (up to stop_after)."""
    passes = [] if passes is None else passes
    stages = [Stage("frontend", model)]
    properties: set[str] = {"traced"}
    for done, p in enumerate(passes):
        if stop_after == stages[-1].name:
            break
        missing = [r for r in p.requires if r not in properties]
        if missing:
            raise PassError(f"pass {p.name} requires {missing}, which the passes before it "
                            f"({', '.join(s.name for s in stages)}) do not ensure")
        try:
            model = p.run(model, hw)
            verify_model(model)
        except VerifyError as err:  # a pass broke the IR: an arasc bug
            raise PassError(f"pass {p.name} produced invalid IR (after {', '.join(s.name for s in stages)}): "
                            f"{err}") from err
        except ValueError:  # the model asks for something the pass does not support: the user's to fix
            raise
        except Exception as err:
            raise PassError(f"pass {p.name} failed (after {', '.join(s.name for s in stages)}): {err}") from err
        properties.update(p.ensures)
        stages.append(Stage(p.name, model))
    return stages


def pass_names() -> list[str]:
    return ["frontend"] + [p.name for p in default_pipeline()]
