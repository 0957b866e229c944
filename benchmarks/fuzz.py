"""Long fuzzing runs (issue 14): hostile variants of compiled small-zoo programs, their side files,
hardware files and inputs, most run in-process through the runtime's entry points (fast), a share
through the real `arasc run` (tracebacks on the terminal, exit codes, hangs, kills). Prints the
outcome table; exits 1 if any case ended other than `ok` or `bad-located`.

    .venv/bin/python benchmarks/fuzz.py --cases 50000 --seed 1

Cases run in a worker process with its address space capped (--memory-gb), so that a runaway
allocation is a MemoryError there, and a worker that dies counts the case it ran as a kill."""
from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import random
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import fuzzing  # noqa: E402

LABELS = {
    "ok": "exit 0, outputs equal to the reference",
    "wrong": "exit 0 with wrong outputs",
    "bad-located": "exit 2 with file:line:col, TOML field or file",
    "bad-unlocated": "exit 2 without a position",
    "internal": "exit 1, internal error",
    "traceback": "Python traceback on the terminal",
    "hang": "hang (no answer in the time limit)",
    "kill": "killed",
}


def compile_bases(names: list[str], folder: str) -> list[fuzzing.Base]:
    from arasc import models
    from arasc.compile import compile_model, weights_name, write_compiled
    from arasc.frontend import import_module
    from arasc.isa.hardware import default_hardware

    bases = []
    for name in names:
        module, inputs = models.get(name).build()
        path = os.path.join(folder, f"{name}.aras")
        write_compiled(compile_model(import_module(module, inputs, name), default_hardware(), [inputs], inputs,
                                     weights_name(path)), path)
        base = fuzzing.base_from_files(name, path)
        base.inputs = fuzzing.example_inputs(base)
        bases.append(base)
    return bases


def worker(bases, seed: int, start: int, stop: int, cli_share: float, memory_gb: float, results) -> None:
    import torch

    torch.set_num_threads(1)  # one core: the reference's small matmuls only lose to thread start-up on a loaded machine
    limit = int(memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with tempfile.TemporaryDirectory() as folder:
        for index in range(start, stop):
            results.put(("start", index, "", ""))
            outcome, detail, how = run_case(bases, seed, index, cli_share, folder)
            results.put(("done", index, outcome, f"{how}\n{detail}"))


def run_case(bases, seed: int, index: int, cli_share: float, folder: str) -> tuple[str, str, str]:
    rng = random.Random(seed * 1_000_003 + index)
    base = bases[rng.randrange(len(bases))]
    case = fuzzing.make_case(base, rng)
    if rng.random() < cli_share:
        return (*fuzzing.run_cli(case, folder), f"[cli] {base.name}: {case.how}")
    return (*fuzzing.run_in_process(case), f"{base.name}: {case.how}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--models", default="digits-cnn,bert-base-small", help="small-zoo models to mutate")
    parser.add_argument("--cli-share", type=float, default=0.02, help="share of cases run through the real CLI")
    parser.add_argument("--memory-gb", type=float, default=6.0, help="address-space cap of the worker")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long, reporting the count run")
    parser.add_argument("--show", type=int, default=5, help="examples shown per bad outcome")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="arasc-fuzz-") as folder:
        bases = compile_bases(args.models.split(","), folder)
    counts: collections.Counter = collections.Counter()
    examples: dict[str, list[str]] = collections.defaultdict(list)
    started = time.time()
    deadline = started + args.minutes * 60 if args.minutes else None
    ctx = mp.get_context("spawn")  # a fresh interpreter: torch and numba thread pools do not survive fork
    next_case = 0
    through_cli = 0
    while next_case < args.cases and not (deadline and time.time() > deadline):
        results = ctx.Queue()
        process = ctx.Process(target=worker, args=(bases, args.seed, next_case, args.cases, args.cli_share,
                                                   args.memory_gb, results))
        process.start()
        running = None
        while True:
            try:
                # a backstop for a worker that stops answering: cases time themselves by CPU time
                kind, index, outcome, detail = results.get(timeout=fuzzing.CASE_SECONDS * 20)
            except Exception:  # no word from the worker: it hangs or died
                if process.is_alive() and running is not None:
                    process.kill()
                    counts["hang"] += 1
                    examples["hang"].append(f"case {running}")
                    next_case = running + 1
                elif running is not None:
                    counts["kill"] += 1
                    examples["kill"].append(f"case {running}: exit {process.exitcode}")
                    next_case = running + 1
                else:
                    next_case = args.cases
                break
            if kind == "start":
                running = index
                if deadline and time.time() > deadline:
                    process.kill()
                    next_case = index
                    break
                continue
            counts[outcome] += 1
            through_cli += detail.startswith("[cli]")
            if outcome not in ("ok", "bad-located") and len(examples[outcome]) < args.show:
                examples[outcome].append(f"case {index}: {detail[:1500]}")
            running, next_case = None, index + 1
            if index % 1000 == 999:
                print(f"{index + 1:,} cases, {time.time() - started:.0f} s: {dict(counts)}", file=sys.stderr)
            if index + 1 == args.cases:
                break
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    total = sum(counts.values())
    print(f"\n{total:,} cases (models {args.models}, seed {args.seed}; {through_cli:,} of them through the CLI, "
          f"the rest in-process) in {time.time() - started:.0f} s\n")
    print("| outcome | cases |\n|---|---|")
    for outcome in fuzzing.OUTCOMES:
        print(f"| {LABELS[outcome]} | {counts[outcome]:,} |")
    for outcome, shown in examples.items():
        print(f"\n## {LABELS[outcome]}")
        for text in shown:
            print(text)
    return 0 if set(counts) <= {"ok", "bad-located"} else 1


if __name__ == "__main__":
    sys.exit(main())
