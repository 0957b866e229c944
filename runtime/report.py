"""What a run shows its user: outputs, time, energy and write activity; JSON report, Chrome /
Perfetto trace, and a Gantt + energy plot."""
from __future__ import annotations

import json

import numpy as np
from rich.console import Console
from rich.table import Table

from ..isa.atomic import write_atomically
from .timing import chrome_trace, summary


def run_summary(result) -> dict:
    return summary(result.timing, result.machine, result.program, result.machine.hw, result.inference)


def print_run(result, out: Console) -> None:
    if result.outputs:
        table = Table(title=f"{result.program.name}: outputs", title_justify="left")
        for column in ("output", "shape", "min", "max", "argmax"):
            table.add_column(column)
        for name, value in result.outputs.items():
            table.add_row(name, str(list(value.shape)), f"{value.min():.4g}", f"{value.max():.4g}",
                          str(int(np.argmax(value.reshape(value.shape[0], -1)[0]))))
        out.print(table)
    s = run_summary(result)
    stats = Table(title=f"ARAS chip, {s['note']}", title_justify="left", show_header=False)
    stats.add_row("cycles", f"{s['cycles']:,} ({s['seconds'] * 1e3:.3f} ms)")
    stats.add_row("inferences / s", f"{s['inferences_per_second']:.1f} (upper bound "
                  f"{s['upper_bound_inferences_per_second']:.1f}: {s['fraction_of_upper_bound']:.0%} of it)")
    e = s["energy_joules"]
    stats.add_row("energy", f"{e['total'] * 1e3:.3f} mJ = write {e['write'] * 1e3:.3f} + compute "
                  f"{e['compute'] * 1e3:.3f} + static {e['static'] * 1e3:.3f} + memory {e['memory'] * 1e3:.3f}")
    mm = s["activation_matmul"]
    if mm["macs"]:
        where = "the SFU" if mm["unit"] == "sfu" else "the MAC array"
        stats.add_row("activation matmuls", f"{mm['macs']:,} MACs on {where}: {mm['cycles']:,} cycles, "
                      f"{mm['joules'] * 1e3:.3f} mJ")
    stats.add_row("blocks written", f"{s['blocks_written']:,} (at most {s['peak_blocks_writing']:,} at once)")
    stats.add_row("write pulses", f"{s['write_pulses']:,}")
    stats.add_row("cells written / skipped", f"{s['cells_written']:,} / {s['cells_skipped']:,}")
    stats.add_row("lifespan", f"{s['lifespan_years']:,.1f} years back to back (most-written row: "
                  f"{s['most_writes_per_row']} writes per inference; endurance "
                  f"{result.machine.hw.crossbar.endurance_writes:.0e} writes)")
    bs = result.machine.bit_serial
    xbar = result.machine.hw.crossbar
    modelled = _adc_modelled(bs.adc_bits, result.adc_choice)
    stats.add_row("ADC", f"{modelled} (the chip's: {xbar.adc_bits}-bit, {xbar.weight_encoding} cells)")
    stats.add_row("ADC conversions", f"{s['adc']['conversions']:,} ({s['adc']['energy_joules'] * 1e3:.3f} mJ, in compute)")
    if bs.adc_bits is not None:
        stats.add_row(f"ADC {bs.adc_bits}-bit samples clipped",
                      f"{bs.clipped:,} of {bs.samples:,} ({bs.clipped / max(bs.samples, 1):.2%})")
        for name, e in (getattr(result, "adc_error", None) or {}).items():
            stats.add_row(f"ADC error on {name}", f"cosine to ideal-ADC output {e['cosine_to_ideal']:.5f}, "
                          f"max |error| {e['max_abs_error']:.4g}, rms {e['rms_error']:.4g}")
    out.print(stats)


def _atomic_write(path: str, write, flag: str) -> None:
    write_atomically([(path, write)], flag)


def cosine(a, b) -> float:
    """Cosine similarity of two arrays, flattened; 1 for two zero arrays, 0 for one."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norms) if norms else float(not a.any() and not b.any())


def _adc_modelled(bits: int | None, choice: str | None) -> str:
    """Which ADC a run modelled, and why (`arasc run --adc`)."""
    if bits is not None:
        why = {"auto": ", the chip's, by default: it reads these cells faithfully", "chip": ", the chip's (--adc chip)"}
        return f"{bits}-bit{why.get(choice or '', '')}"
    if choice == "auto":
        return "ideal, by default on this chip: its cells saturate its ADC (docs/adc.md); --adc chip models it"
    return "ideal (an idealisation; arasc run --adc chip models the chip's)"


def adc_error(result, ideal) -> dict:
    """What a finite ADC did to each output, against the same program with an ideal ADC."""
    errors = {}
    for name, got in result.outputs.items():
        want = ideal.outputs[name].astype(np.float64).ravel()
        diff = got.astype(np.float64).ravel() - want
        errors[name] = {"cosine_to_ideal": cosine(want, got),
                        "max_abs_error": float(np.abs(diff).max()),
                        "rms_error": float(np.sqrt(np.mean(diff * diff)))}
    return errors


def write_report(result, path: str) -> None:
    data = run_summary(result)
    bs = result.machine.bit_serial
    data["adc"].update({"bits": bs.adc_bits, "choice": result.adc_choice, "samples": bs.samples, "clipped": bs.clipped,
                        "recovered": bs.recovered})
    if getattr(result, "adc_error", None):
        data["adc"]["error"] = result.adc_error
    _atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()), "--report")


def write_trace(result, path: str) -> None:
    trace = chrome_trace(result.timing, result.machine.hw)
    _atomic_write(path, lambda f: f.write(json.dumps(trace).encode()), "--trace")


def write_plot(result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timing, hw = result.timing, result.machine.hw
    ms = 1e3 / hw.chip.clock_hz
    fig, (gantt, bars) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 1]})
    rows = sorted({int(s.track.split()[1]) for s in timing.spans if s.track.startswith("row")})
    for span in timing.spans:
        if span.track.startswith("row"):
            y = int(span.track.split()[1])
            color = "tab:red" if span.name.startswith("write") else "tab:blue"
            gantt.broken_barh([(span.start * ms, (span.end - span.start) * ms)], (y - 0.4, 0.8), color=color)
        elif span.track == "compute":
            gantt.broken_barh([(span.start * ms, (span.end - span.start) * ms)], (-8, 6), color="tab:green")
    gantt.set_xlabel("time (ms)")
    gantt.set_ylabel("APU row (compute stream below)")
    gantt.set_ylim(-10, (max(rows) if rows else 0) + 2)
    gantt.set_title(f"{result.program.name}: writes (red), crossbar compute (blue), compute stream (green)")
    e = run_summary(result)["energy_joules"]
    parts = ["write", "compute", "static", "memory"]
    bars.bar(parts, [e[p] * 1e3 for p in parts], color=["tab:red", "tab:blue", "tab:gray", "tab:orange"])
    bars.set_ylabel("energy (mJ)")
    bars.set_title(f"energy, total {e['total'] * 1e3:.2f} mJ")
    fig.tight_layout()
    _atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"), "--plot")
    plt.close(fig)
