"""The ARAS chip as data: a TOML format, a strict loader and one frozen dataclass tree.

The compiler and the runtime both read the chip from here, and the runtime imports only
``arasc.isa``, so this module uses the standard library alone. The defaults are the ARAS
paper's (Table II and section VI); docs/hardware.md describes every field, its unit and its
source, and docs/energy.md derives each energy figure.

A field's TOML type and allowed range live beside it, in its dataclass (`_Rule`), so the
loader, the error messages and the dataclasses cannot drift apart.
"""

import dataclasses
import difflib
import functools
import hashlib
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
DEFAULT_HARDWARE = "aras-default"
BUNDLED_HARDWARE = ("aras-default", "baseline-15x256k", "aras-differential", "aras-differential-1bit", "aras-paper",
                    "aras-sme")


class HardwareConfigError(ValueError):
    """A hardware file that cannot be used. The message is one paragraph:
    ``<file>: [table] field: problem; allowed: ...``, ready to show a user as it is."""


@dataclass(frozen=True)
class _Rule:
    """How the loader checks one field: its TOML type, then its range."""

    kind: type  # int, float (an int is accepted and widened), str, or tuple (array of ints)
    allowed: str  # shown after "allowed:" in every error about this field
    accepts: Callable[[Any], bool]
    # A field added after files were written: a file without it takes `default`, and the canonical
    # text leaves it out at that value, so older files load and older chips keep their fingerprint.
    default: Any = None


def _rule(kind: type, allowed: str, accepts: Callable[[Any], bool], default: Any = None) -> Any:
    return field(metadata={"rule": _Rule(kind, allowed, accepts, default)})


# Upper bounds: generous for any chip physics allows, small enough that every count the compiler
# and the interpreter iterate over or allocate stays finite (docs/hardware.md, "Ranges").
_HUGE = 1 << 40


def _count(maximum: int = _HUGE) -> Any:
    return _rule(int, f"an integer in 1..{maximum:,}", lambda v: 1 <= v <= maximum)


def _cycles() -> Any:
    return _rule(int, f"an integer in 0..{_HUGE:,}", lambda v: 0 <= v <= _HUGE)


def _positive(maximum: float = 1e30) -> Any:
    return _rule(float, f"a finite number > 0 and <= {maximum:g}", lambda v: math.isfinite(v) and 0 < v <= maximum)


def _energy() -> Any:
    return _rule(float, "a finite number >= 0 and <= 1e6", lambda v: math.isfinite(v) and 0 <= v <= 1e6)


# Names appear bare in program text (`.hw NAME sha256=...`), so they must be one token.
_TOKEN = re.compile(r"[A-Za-z0-9._-]+")


def _token() -> Any:
    return _rule(str, "a non-empty name of letters, digits, '.', '_' and '-'",
                 lambda v: _TOKEN.fullmatch(v) is not None)


@dataclass(frozen=True)
class Chip:
    """Chip organisation: PEs, each a grid of APU rows x APUs (paper III-A, Fig. 4; VI)."""

    name: str = _token()
    technology_nm: int = _count(1000)
    clock_hz: float = _positive(1e12)
    pes: int = _count(1 << 16)
    apu_rows_per_pe: int = _count(1 << 16)
    apus_per_row: int = _count(1 << 10)


WEIGHT_MAPPINGS = ("packed", "bit_sliced")


@dataclass(frozen=True)
class Crossbar:
    """One APU's ReRAM crossbar and its periphery (paper II-A, II-B, III-A; Table II)."""

    rows: int = _count(1 << 12)
    cols_cells: int = _count(1 << 12)
    cell_bits: int = _rule(int, "one of 1, 2, 4", lambda v: v in (1, 2, 4))
    # The quantizer makes 8-bit weights (DESIGN.md section 3): the cells must hold exactly those.
    weight_bits: int = _rule(int, "8 (the quantizer's weights are 8-bit)", lambda v: v == 8)
    compute_cycles_per_window: int = _count(1 << 20)
    write_cycles_per_crossbar: int = _count(1 << 30)
    adcs_per_crossbar: int = _count(1 << 12)
    adc_bits: int = _count(32)
    endurance_writes: float = _positive()
    # "unsigned": a weight slice is one cell, bitline sums are >= 0 (ARAS, VI). "differential": a
    # slice is a pair of cells on two bitlines subtracted before the ADC (RAELLA's 2T2R), so a slice
    # is signed, the ADC reads a signed sum, and a crossbar row holds half the weights (docs/adc.md).
    weight_encoding: str = _rule(str, '"unsigned" or "differential"', lambda v: v in ("unsigned", "differential"))
    # "packed": a weight's slices sit in adjacent cells of one crossbar (ARAS, VI). "bit_sliced": slice t
    # of a block's weights fills a crossbar of its own, spliced back by the SFU (SME; docs/tiling.md), so
    # that a crossbar whose slice is zero for every weight can be left out (squeeze-out).
    weight_mapping: str = _rule(str, '"packed" or "bit_sliced"', lambda v: v in WEIGHT_MAPPINGS, default="packed")


@dataclass(frozen=True)
class Memory:
    """Main memory, which holds the weights and feeds every write; the PE buffers (III-B, VI)."""

    kind: str = _token()
    capacity_bytes: int = _count(1 << 50)
    bandwidth_bytes_per_s: float = _positive(1e15)
    pe_buffer_bytes: int = _count(1 << 40)


@dataclass(frozen=True)
class Gbuffer:
    """Global-buffer banks, each powered on only while it holds a layer's activations (V-A, VI)."""

    banks_bytes: tuple[int, ...] = _rule(
        tuple, "an array of 1..32 integers in 1..2^40 (the bank ILP chooses among subsets)",
        lambda v: 0 < len(v) <= 32 and min(v) >= 1 and max(v) <= _HUGE)


@dataclass(frozen=True)
class Latency:
    """Digital latencies the paper does not give; assumptions argued in docs/hardware.md."""

    sfu_lanes: int = _count(1 << 20)
    sfu_cycles_per_vector: int = _count(1 << 20)
    accumulate_latency_cycles: int = _cycles()
    gbuffer_bytes_per_cycle_per_bank: int = _count(1 << 20)


MATMUL_UNITS = ("sfu", "array")


@dataclass(frozen=True)
class Matmul:
    """Where attention's activation-by-activation products (`qmatmul`) run. They cannot go on the
    crossbars, which hold weights written 768 us ahead; the paper never says where it computes
    them (docs/hardware.md). "sfu": on the SFU's lanes, one multiply-accumulate per lane per
    cycle at sfu_j_per_op; "array": a digital MAC array beside the SFU, `macs_per_cycle` wide at
    `j_per_mac` (those two fields are read only for "array")."""

    unit: str = _rule(str, 'one of "sfu", "array"', lambda v: v in MATMUL_UNITS)
    macs_per_cycle: int = _count(1 << 24)
    j_per_mac: float = _energy()


@dataclass(frozen=True)
class Energy:
    """Energy per event and static power; every figure is derived in docs/energy.md."""

    write_j_per_pulse: float = _energy()
    compute_j_per_crossbar_window: float = _energy()
    adc_j_per_conversion: float = _energy()
    accumulate_j_per_add: float = _energy()
    sfu_j_per_op: float = _energy()
    gbuffer_access_j_per_byte: float = _energy()
    gbuffer_static_w_per_kib: float = _energy()
    main_memory_j_per_byte: float = _energy()


@dataclass(frozen=True)
class Hardware:
    """The whole chip, one table of the TOML file per field. Build it with `load_hardware`:
    the loader checks every value, the constructor and `dataclasses.replace` do not."""

    chip: Chip
    crossbar: Crossbar
    memory: Memory
    gbuffer: Gbuffer
    latency: Latency
    energy: Energy
    matmul: Matmul

    @property
    def slices_per_weight(self) -> int:
        """Weight slices, each `cell_bits` of the weight (or of its offset's magnitude): 4 (VI)."""
        return self.crossbar.weight_bits // self.crossbar.cell_bits

    @property
    def differential(self) -> bool:
        """Signed slices in differential cell pairs (docs/adc.md): twice the cells per weight."""
        return self.crossbar.weight_encoding == "differential"

    @property
    def adc_reads_cells(self) -> bool:
        """Whether the chip's own ADC reads its bitlines faithfully enough to be the runtime's default
        (`arasc run --adc auto`). Measured, not derived (docs/results.md, "A 6-bit ADC"): only signed
        one-bit slices (differential pairs, cell_bits 1), with the default passes, keep every small
        zoo model at cosine >= 0.995, the digits CNNs' top-1 and MiniLM's similarity correlation with
        a 6-bit ADC; unsigned cells sum to 0..384 on 128 rows and saturate it, and 2-bit signed
        slices cost MiniLM 0.45 of correlation. The bound below is the widest slice that passed."""
        return self.differential and self.crossbar.cell_bits == 1 and self.crossbar.adc_bits >= 6

    @property
    def bit_sliced(self) -> bool:
        """SME's mapping (docs/tiling.md): an APU row holds one weight slice per crossbar slot."""
        return self.crossbar.weight_mapping == "bit_sliced"

    @property
    def cells_per_weight(self) -> int:
        """Consecutive cells holding one weight: 8-bit weights in 2-bit cells = 4 (VI); 8 when
        every slice is a differential pair."""
        return self.slices_per_weight * (2 if self.differential else 1)

    @property
    def conversions_per_step(self) -> int:
        """ADC conversions of one crossbar per input step: one per bitline, or per differential pair."""
        return self.crossbar.cols_cells // (2 if self.differential else 1)

    @property
    def adc_range(self) -> tuple[int, int]:
        """(lowest, highest) sample of an `adc_bits` ADC in partial-sum units: 0..2^b - 1 for
        unsigned bitline sums, -2^(b-1)..2^(b-1) - 1 for the signed sums of differential pairs."""
        bits = self.crossbar.adc_bits
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.differential else (0, (1 << bits) - 1)

    @property
    def weights_per_row(self) -> int:
        """Weights in one crossbar row: 128 cells / 4 = 32 (DESIGN.md section 2)."""
        return self.crossbar.cols_cells // self.cells_per_weight

    @property
    def weights_per_crossbar(self) -> int:
        """128 rows x 32 weights = 4,096."""
        return self.crossbar.rows * self.weights_per_row

    @property
    def apu_rows(self) -> int:
        """APU rows on the chip, the unit a layer is allocated in (IV-C): 96 x 6 = 576."""
        return self.chip.pes * self.chip.apu_rows_per_pe

    @property
    def crossbars(self) -> int:
        """One crossbar per APU: 576 x 4 = 2,304."""
        return self.apu_rows * self.chip.apus_per_row

    @property
    def block(self) -> tuple[int, int]:
        """(rows, weight columns) of the weight-matrix block one APU row holds: its APUs share
        the same inputs (IV-C), each adding 32 columns, so (128, 128) (Fig. 3)."""
        return self.crossbar.rows, self.chip.apus_per_row * self.weights_per_row

    @property
    def weights_per_apu_row(self) -> int:
        """128 x 128 = 16,384."""
        rows, cols = self.block
        return rows * cols

    @property
    def capacity_weights(self) -> int:
        """Weights the chip holds at once: 576 x 16,384 = 9,437,184."""
        return self.apu_rows * self.weights_per_apu_row

    @property
    def gbuffer_bank_static_w(self) -> tuple[float, ...]:
        """Static power of each Gbuffer bank while powered on, the ILP's cost (V-A, Eq. 1)."""
        per_kib = self.energy.gbuffer_static_w_per_kib
        return tuple(size / 1024 * per_kib for size in self.gbuffer.banks_bytes)

    def seconds(self, cycles: float) -> float:
        """Wall-clock time of `cycles` clock cycles."""
        return cycles / self.chip.clock_hz

    def slice_bits_problem(self, bits: int) -> str | None:
        """Why a layer cannot slice its weights `bits` bits to a cell on this chip (RAELLA's adaptive
        weight slicing, docs/adc.md), or None: a slice is at most a cell's bits (a cell then uses
        2^bits of its levels), whole slices make a weight, whole weights a crossbar row."""
        xbar = self.crossbar
        if not 1 <= bits <= xbar.cell_bits:
            return f"{bits}-bit weight slices: {self.chip.name}'s cells hold 1 to {xbar.cell_bits} bits"
        if xbar.weight_bits % bits:
            return f"{bits}-bit weight slices: {xbar.weight_bits}-bit weights are not whole slices of {bits} bits"
        cells = xbar.weight_bits // bits * (2 if self.differential else 1)
        if xbar.cols_cells % cells:
            return f"{bits}-bit weight slices: a weight takes {cells} cells, which do not divide a crossbar row of {xbar.cols_cells}"
        if bits != xbar.cell_bits and self.bit_sliced:
            return f"{bits}-bit weight slices on {self.chip.name}: per-layer slicing is built for packed weights only"
        return None

    def sliced(self, bits: int) -> "Hardware":
        """The chip as a layer with `bits`-bit weight slices sees it: its cells programmed at 2^bits
        levels, so `cell_bits` = bits and every figure that follows (slices, cells per weight,
        weights per row, the block) with it. The caller checks `slice_bits_problem` first."""
        if bits == self.crossbar.cell_bits:
            return self
        return dataclasses.replace(self, crossbar=dataclasses.replace(self.crossbar, cell_bits=bits))


def load_hardware(path: str | os.PathLike | None = None) -> Hardware:
    """Load and check a hardware file; None loads the bundled aras-default.toml."""
    path = Path(path) if path is not None else _HERE / f"{DEFAULT_HARDWARE}.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise HardwareConfigError(f"{path}: cannot read the hardware file: {error}") from None
    return loads_hardware(text, source=str(path))


def loads_hardware(text: str, source: str = "<string>") -> Hardware:
    """Parse and check hardware TOML text; `source` names it in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise HardwareConfigError(f"{source}: TOML syntax error: {error}") from None
    table_names = [table.name for table in fields(Hardware)]
    _reject_unknown(source, None, document, table_names)
    tables = {}
    for table in fields(Hardware):
        if table.name not in document:
            raise _error(source, table.name, None, "missing table",
                         "the tables " + ", ".join(table_names))
        raw = document[table.name]
        if not isinstance(raw, dict):
            raise _error(source, table.name, None, f"expected a table, got {_toml_type(raw)}",
                         "a table of the fields " + ", ".join(f.name for f in fields(table.type)))
        tables[table.name] = _load_table(source, table.name, table.type, raw)
    hw = Hardware(**tables)
    _check_cell_packing(source, hw.crossbar)
    _check_simulation_fits(source, hw)
    return hw


# Every APU row is a Python object somewhere in the schedulers: bound them, whatever the memory.
MAX_APU_ROWS = 1 << 20
MEMORY_SHARE = 0.25  # of this machine's memory, for the interpreter's crossbar cells


def machine_memory_bytes() -> int:
    """The memory this process may use: the machine's physical memory, or less if the process's
    address space is capped (ulimit -v)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 1 << 34  # no sysconf: assume 16 GiB
    try:
        import resource

        cap = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        cap = -1
    return min(physical, cap) if cap > 0 else physical


def _check_simulation_fits(source: str, hw: Hardware) -> None:
    """The interpreter holds every crossbar cell (one byte per weight: runtime/machine.py), and
    the schedulers a list entry per APU row; refuse a chip whose simulation would not fit."""
    if hw.apu_rows > MAX_APU_ROWS:
        raise _error(source, "chip", "pes", f"pes x apu_rows_per_pe = {hw.apu_rows:,} APU rows, more than "
                     f"arasc simulates", f"pes x apu_rows_per_pe <= {MAX_APU_ROWS:,}")
    cells = hw.apu_rows * hw.block[0] * hw.block[1]
    budget = int(machine_memory_bytes() * MEMORY_SHARE)
    if cells > budget:
        raise _error(source, "chip", "pes", f"the chip's {cells:,} bytes of crossbar cells (APU rows x "
                     f"crossbar rows x weights per APU row) do not fit this machine's memory",
                     f"at most {budget:,} bytes ({MEMORY_SHARE:.0%} of this machine's memory)")


def check_interpretable(hw: Hardware, source: str) -> None:
    """The interpreter runs unsigned cells of at most 15 write pulses a weight, and differential
    pairs: a chip whose unsigned cells need more (4-bit cells with 8-bit weights) compiles, but
    does not run."""
    most_pulses = ((1 << hw.crossbar.cell_bits) - 1) * hw.cells_per_weight
    if most_pulses > 15 and not hw.differential:
        raise _error(source, "crossbar", "cell_bits", f"{hw.crossbar.cell_bits}-bit cells take up to {most_pulses} "
                     f"write pulses per weight; the interpreter runs unsigned cells of at most 15, so it "
                     f"cannot run this chip", "1 or 2 with 8-bit weights, to run")


@functools.cache
def default_hardware() -> Hardware:
    """The ARAS chip of Table II (bundled aras-default.toml), loaded once."""
    return load_hardware()


def bundled_hardware(name: str) -> Hardware:
    """A hardware file shipped with arasc, by the name a program gives in `.hw NAME`."""
    if name not in BUNDLED_HARDWARE:
        raise HardwareConfigError(f"{name}: no bundled hardware of that name; "
                                  f"allowed: {', '.join(BUNDLED_HARDWARE)}")
    return load_hardware(_HERE / f"{name}.toml")


def dumps_hardware(hw: Hardware) -> str:
    """Canonical TOML text: tables and fields in declaration order, shortest round-trip floats,
    no comments. `loads_hardware(dumps_hardware(hw)) == hw`."""
    lines = []
    for table in fields(hw):
        section = getattr(hw, table.name)
        lines.append(f"[{table.name}]")
        lines.extend(f"{f.name} = {_toml_value(getattr(section, f.name))}" for f in fields(section)
                     if getattr(section, f.name) != f.metadata["rule"].default)
        lines.append("")
    return "\n".join(lines)


def hardware_fingerprint(hw: Hardware) -> str:
    """sha256 (hex) of the canonical text; a program pins its chip with `.hw NAME sha256=...`."""
    return hashlib.sha256(dumps_hardware(hw).encode("utf-8")).hexdigest()


def _load_table(source: str, table: str, cls: type, raw: dict) -> Any:
    names = [f.name for f in fields(cls)]
    _reject_unknown(source, table, raw, names)
    values = {}
    for f in fields(cls):
        rule: _Rule = f.metadata["rule"]
        if f.name not in raw and rule.default is not None:
            values[f.name] = rule.default
            continue
        if f.name not in raw:
            raise _error(source, table, f.name, "missing required field", rule.allowed)
        value = _convert(rule.kind, raw[f.name])
        if value is None:
            raise _error(source, table, f.name,
                         f"expected {_EXPECTED[rule.kind]}, got {_toml_type(raw[f.name])} "
                         f"{raw[f.name]!r}", rule.allowed)
        if not rule.accepts(value):
            raise _error(source, table, f.name, f"{raw[f.name]!r} is not allowed", rule.allowed)
        values[f.name] = value
    return cls(**values)


def _check_cell_packing(source: str, xbar: Crossbar) -> None:
    """A weight must fill whole cells, and a crossbar row whole weights (paper VI)."""
    if xbar.weight_bits % xbar.cell_bits:
        raise _error(source, "crossbar", "weight_bits",
                     f"{xbar.weight_bits} is not a multiple of cell_bits = {xbar.cell_bits}",
                     f"a multiple of {xbar.cell_bits}")
    if xbar.weight_mapping == "bit_sliced" and xbar.weight_encoding == "differential":
        raise _error(source, "crossbar", "weight_mapping", '"bit_sliced" with weight_encoding = "differential" is '
                     "not built: the interpreter packs an APU row's slices in one byte per weight column, and a "
                     "differential slice is signed", '"packed" with differential pairs')
    pairs = 2 if xbar.weight_encoding == "differential" else 1
    cells_per_weight = xbar.weight_bits // xbar.cell_bits * pairs
    if xbar.cols_cells % cells_per_weight:
        how = "weight_bits / cell_bits" + (" x 2 (differential pairs)" if pairs == 2 else "")
        raise _error(source, "crossbar", "cols_cells",
                     f"{xbar.cols_cells} is not a multiple of {how} = "
                     f"{cells_per_weight} cells per weight", f"a multiple of {cells_per_weight}")


def _reject_unknown(source: str, table: str | None, raw: dict, names: list[str]) -> None:
    """Typo protection: name the first unknown key and the valid name nearest to it."""
    for key in raw:
        if key in names:
            continue
        nearest = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean '{nearest[0]}'?)" if nearest else ""
        if table is None:
            raise _error(source, key, None, f"unknown table{hint}",
                         "the tables " + ", ".join(names))
        raise _error(source, table, key, f"unknown field{hint}",
                     f"the fields of [{table}]: " + ", ".join(names))


def _error(source: str, table: str, name: str | None, problem: str,
           allowed: str) -> HardwareConfigError:
    where = f"[{table}] {name}" if name else f"[{table}]"
    return HardwareConfigError(f"{source}: {where}: {problem}; allowed: {allowed}")


_EXPECTED = {int: "an integer", float: "a number", str: "a string", tuple: "an array of integers"}
_TOML_TYPES = {str: "string", int: "integer", float: "float", bool: "boolean", list: "array",
               dict: "table"}


def _toml_type(value: Any) -> str:
    return _TOML_TYPES.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` is never a count in TOML.
    return isinstance(value, int) and not isinstance(value, bool)


def _convert(kind: type, value: Any) -> Any:
    """The value as the field's Python type, or None when its TOML type is wrong."""
    if kind is int:
        return value if _is_int(value) else None
    if kind is float:
        return float(value) if _is_int(value) or isinstance(value, float) else None
    if kind is str:
        return value if isinstance(value, str) else None
    if isinstance(value, list) and all(_is_int(item) for item in value):
        return tuple(value)
    return None


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'  # names are single tokens (_TOKEN): nothing to escape
    if isinstance(value, tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return repr(value)  # int, or a float's shortest round-trip form, which TOML accepts
