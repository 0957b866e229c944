"""What a run shows its user: outputs and the chip's write activity."""
from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table


def print_run(result, out: Console) -> None:
    table = Table(title=f"{result.program.name}: outputs", title_justify="left")
    for column in ("output", "shape", "min", "max", "argmax"):
        table.add_column(column)
    for name, value in result.outputs.items():
        table.add_row(name, str(list(value.shape)), f"{value.min():.4g}", f"{value.max():.4g}",
                      str(int(np.argmax(value.reshape(value.shape[0], -1)[0]))))
    out.print(table)
    m = result.machine
    writes = m.writes
    stats = Table(title="crossbar activity (one inference from empty crossbars)", title_justify="left",
                  show_header=False)
    stats.add_row("blocks written", f"{writes.blocks:,}")
    stats.add_row("write pulses", f"{writes.pulses:,}")
    stats.add_row("cells written / skipped", f"{writes.cells_written:,} / {writes.cells_skipped:,}")
    if m.bit_serial.adc_bits is not None:
        share = m.bit_serial.clipped / max(m.bit_serial.samples, 1)
        stats.add_row(f"ADC {m.bit_serial.adc_bits}-bit samples clipped",
                      f"{m.bit_serial.clipped:,} of {m.bit_serial.samples:,} ({share:.2%})")
    out.print(stats)
