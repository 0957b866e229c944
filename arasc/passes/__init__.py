"""Compiler passes and the pipeline that runs them.

A pass is a small frozen dataclass (its fields are its options) with a `name`, what it
`requires` of the model and what it `ensures`, and `run(model, hw) -> model`. `apply_pass`
checks what it requires, runs it, verifies the IR after it, and names a failing pass together
with the passes before it (as torch.fx's pass manager does). The driver, `arasc/compile.py`,
lists the passes in order."""
from __future__ import annotations

from typing import ClassVar, Protocol

from ..ir import Model, VerifyError, verify_model


class Pass(Protocol):
    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]
    ensures: ClassVar[tuple[str, ...]]

    def run(self, model: Model, hw) -> Model: ...


class PassError(RuntimeError):
    pass


def apply_pass(p: Pass, model: Model, hw, before: tuple[str, ...], ensured: set[str]) -> Model:
    """Run one pass after the stages `before`, which ensured `ensured` (updated with what `p`
    ensures); verify its IR. A failure names the pass and the passes before it."""
    missing = [r for r in p.requires if r not in ensured]
    if missing:
        raise PassError(f"pass {p.name} requires {missing}, which the stages before it "
                        f"({', '.join(before)}) do not ensure")
    try:
        model = p.run(model, hw)
        verify_model(model)
    except VerifyError as err:  # a pass broke the IR: an arasc bug
        raise PassError(f"pass {p.name} produced invalid IR (after {', '.join(before)}): {err}") from err
    except ValueError:  # the model asks for something the pass does not support: the user's to fix
        raise
    except Exception as err:
        raise PassError(f"pass {p.name} failed (after {', '.join(before)}): {err}") from err
    ensured.update(p.ensures)
    return model


def run_passes(model: Model, hw, passes: list[Pass]) -> Model:
    """The passes in order on a lowered model, without the driver's instrumentation (for tests and
    notebooks; `arasc/compile.py` is the compiler's pipeline)."""
    before, ensured = ["lower"], {"traced"}
    for p in passes:
        model = apply_pass(p, model, hw, tuple(before), ensured)
        before.append(p.name)
    return model
