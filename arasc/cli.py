"""The `arasc` command line: models, ir, compile, run.

Exit status: 0 success, 2 bad input (the message says what and where), 1 internal error.
Set ARASC_DEBUG=1 to see the Python traceback of an internal error."""
from __future__ import annotations

import argparse
import os
import sys

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


def cmd_ir(args, out: Console) -> int:
    from .ir import print_graph
    from .loader import load_model
    from .passes import pass_names, run_pipeline
    from .summary import summarize

    names = pass_names()
    after = args.after or names[-1]
    if after not in names + ["all"]:
        raise UsageError(f"--after {after}: no such pass; passes in order: {', '.join(names)}, or all")
    stages = run_pipeline(load_model(args.model, args.frontend), stop_after=None if after == "all" else after)
    if after != "all":
        stages = [s for s in stages if s.name == after]
    for stage in stages:
        if args.summary:
            summary = summarize(stage.model)
            table = Table(title=f"{summary.name} after {stage.name}", title_justify="left", show_header=False)
            for key, value in summary.rows():
                table.add_row(key, value)
            out.print(table)
        else:
            text = print_graph(stage.model.graph)
            if after == "all":
                text = f"# ---- after {stage.name} ----\n{text}"
            sys.stdout.write(text)
    return EXIT_OK


def cmd_not_yet(what: str, issue: str):
    def run(args, out):
        raise UsageError(f"`arasc {what}` is not implemented yet ({issue}); nothing was written. "
                         f"`arasc ir MODEL` shows what the compiler does today.")
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arasc", description="Compiler and simulator for the ARAS ReRAM "
                                     "processing-in-memory DNN accelerator.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_help = "a zoo name (see `arasc models`), path/to/file.py:factory, or a torch.export archive (.pt2)"
    frontend_help = "capture with torch.fx, torch.export, or fx falling back to export (default auto)"

    p = sub.add_parser("models", help="list the model zoo", description="List the bundled model zoo.")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("ir", help="print a model's layer IR", description="Print the layer IR of MODEL after "
                       "the frontend or after a compiler pass.")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("--after", metavar="PASS", help="show the IR after this pass (default: the last); 'all' shows "
                   "every stage")
    p.add_argument("--summary", action="store_true", help="print layer and weight counts instead of the IR text")
    p.add_argument("--frontend", choices=("auto", "fx", "export"), default="auto", help=frontend_help)
    p.set_defaults(run=cmd_ir)

    p = sub.add_parser("compile", help="compile a model to a .aras program", description="Compile MODEL to an "
                       ".aras program and its weight file.")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("-o", "--output", metavar="OUT.aras", required=True, help="program to write")
    p.set_defaults(run=cmd_not_yet("compile", "the .aras backend lands with the ISA issue"))

    p = sub.add_parser("run", help="run a .aras program on the interpreter-simulator",
                       description="Execute an .aras program: outputs, cycles and energy.")
    p.add_argument("program", metavar="PROG.aras")
    p.set_defaults(run=cmd_not_yet("run", "the interpreter-simulator lands with the ISA issue"))
    return parser


def bad_input_errors() -> tuple[type[BaseException], ...]:
    from .frontend import FrontendError
    from .ir import IRParseError, VerifyError
    from .loader import ModelLoadError

    return UsageError, FrontendError, ModelLoadError, IRParseError, VerifyError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    try:
        return args.run(args, out)
    except bad_input_errors() as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # an arasc bug, not the user's
        if os.environ.get("ARASC_DEBUG"):
            raise
        err.print(f"[bold red]internal error:[/] {type(e).__name__}: {e}\n(set ARASC_DEBUG=1 for the traceback; "
                  f"please report it)", markup=True, soft_wrap=True)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
