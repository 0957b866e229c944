"""The crossbar computation of an APU row, as the hardware does it (paper II-A, III-B).

Activations enter bit-serially (bit b of every uint8 input on the 128 wordlines at once); each
crossbar column (bitline) sums input-bit x cell-level over its 128 rows; an ADC samples that
partial sum; the digital periphery shifts and adds over the 8 input bits and the 4 cells of a
weight (cell t holds bits 2t+1:2t, so significance 2^b * 4^t).

`BitSerial.product` emulates exactly that, sample by sample, with an optional finite ADC that
saturates (and, with an LSB above 1, quantizes) each partial sum and counts the clipped samples.

Two shortcuts give the same result (tests show both agree with `product` on every small zoo
model, and on random crossbars):
- with an ideal ADC the result is the integer product of the inputs with the weights the cells
  encode, so the machine multiplies by those weights directly (float32 BLAS is exact here: every
  product is below 2^16 and 256 rows keep sums below 2^24);
- with a finite ADC of unit step (`clipping_product`), a sample differs from the bitline sum only
  where it saturates: so the exact product is taken, and only the samples that can saturate are
  emulated, to subtract what the ADC cut off. Which can is bounded twice (`saturable_columns`):
  a column whose positive levels sum to at most the ADC's top (and negative ones to at least its
  bottom) never saturates, whatever the input; with 1-bit differential slices that leaves out
  61 % of ResNet-50's columns, mostly upper slices of small weights. A window driving D rows
  reaches at most D x the largest level of the rest. Their bitline sums, (hot windows) x
  (saturable columns) for each input bit, are GEMMs of about 9x the ideal product's
  multiply-adds on ResNet-50 with 1-bit slices (where the window bound alone gave 23x), and
  nearly every sample with 2-bit signed slices or wider input slices. They are made as int8
  GEMMs with int32 sums (torch._int_mm, VNNI) on one of torch's threads, 4x float32 BLAS per
  thread on this CPU, where torch's second thread waits spinning more than it helps on a loaded
  2-core machine; float32 BLAS where torch is not loaded (runtime/int8.py). numba kernels
  (runtime/kernels.py) then take each row's extremes, and only in rows with a sample out of
  range find those samples and subtract what the ADC cut off (`clip_samples`).
  `speculative_product` bounds its wider input slices the same way and replaces only the
  saturated samples, each read again bit by bit as a dot product of its window's bits with its
  column's levels (`recover_samples`). Both are exact integer arithmetic: the results and counts
  are the sample-by-sample emulation's. The machine keeps each read's weights, levels and
  saturable columns per (layer, blocks held), as they depend only on the weights written
  (runtime/machine.py `_shortcut_operands`). Speeds against PyTorch: docs/results.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .int8 import float32_product, int8_bitline_sums

WINDOW_CHUNK = 2048  # windows per bit-serial step, bounding the [bits, windows, cells] temporary
SUMS_CHUNK = 1 << 22  # bitline sums per product of the shortcuts, bounding their temporaries


@dataclass
class BitSerial:
    """Bit-serial emulation with an ADC of `adc_bits` (None = ideal) and step `adc_lsb`.
    `cells_per_weight` counts weight slices: with differential pairs (`signed`) a slice is a
    pair whose signed level enters the sum, and the ADC reads -2^(b-1)..2^(b-1) - 1 steps."""

    input_bits: int
    cell_bits: int
    cells_per_weight: int
    adc_bits: int | None = None
    adc_lsb: int = 1
    signed: bool = False
    samples: int = 0
    clipped: int = 0
    recovered: int = 0  # speculative samples that saturated and were read again (speculative_product)
    int8: bool = False  # the shortcuts' products in torch on one thread, bitline sums in int8 (runtime/int8.py)

    @property
    def adc_range(self) -> tuple[int, int]:
        """(lowest, highest) sample in partial-sum units (of adc_lsb steps, times adc_lsb)."""
        if self.adc_bits is None:
            raise ValueError("an ideal ADC has no range")
        bits = self.adc_bits
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)

    def product(self, x: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """x [windows, rows] uint8 codes; levels [rows, crossbars * cells per row], crossbar-major
        -> int64 [windows, crossbars * weights per row].

        float32 is exact throughout: a bitline sum is at most rows x (2^cell_bits - 1), and the
        shift-and-add total at most that x (2^input_bits - 1) x sum of 4^t, below 2^24 for 128
        rows of 2-bit cells and 8-bit inputs (checked below for other chips)."""
        conductance = levels.astype(np.float32)
        bit_weight = (2.0 ** np.arange(self.input_bits)).astype(np.float32)
        cell_weight = (2.0 ** (self.cell_bits * np.arange(self.cells_per_weight))).astype(np.float32)
        largest = levels.shape[0] * ((1 << self.cell_bits) - 1) * bit_weight.sum() * cell_weight.sum()  # |sums| too
        if largest >= 2**24:
            raise ValueError("bit-serial emulation needs float32-exact partial sums; this chip's crossbars are too large")
        out = np.empty((x.shape[0], levels.shape[1] // self.cells_per_weight), np.int64)
        codes = x.astype(np.uint8)
        shifts = np.arange(self.input_bits, dtype=np.uint8)[:, None, None]
        for start in range(0, x.shape[0], WINDOW_CHUNK):
            chunk = codes[start:start + WINDOW_CHUNK]
            bits = ((chunk[None, :, :] >> shifts) & 1).astype(np.float32)    # [bits, windows, rows]
            partial = self.sample(bits @ conductance)                        # bitline sums through the ADC
            by_bit = bit_weight @ partial.reshape(self.input_bits, -1)       # shift-and-add over input bits
            total = by_bit.reshape(len(chunk), -1, self.cells_per_weight) @ cell_weight  # ... and over cells
            out[start:start + len(chunk)] = total.astype(np.int64)
        return out

    def clipping_product(self, x: np.ndarray, weights: np.ndarray, levels: np.ndarray,
                         saturable: dict | None = None) -> np.ndarray:
        """`product` for an ADC of unit step, from x [windows, rows] float32 codes, the weights
        [rows, crossbars * weights per row] float32 the cells encode and their levels (as in
        `product`) -> float32 [windows, crossbars * weights per row] (exact integers).
        `saturable` (optional) keeps `saturable_columns` answers between reads of the same
        levels, by largest wordline value."""
        from .kernels import clip_samples  # numba: a compile imports it only where it slices weights

        if self.adc_bits is None or self.adc_lsb != 1:
            raise ValueError("clipping_product models a finite ADC of unit step")
        low, top = self.adc_range
        windows, rows = x.shape
        levels = levels[:rows]  # rows past the inputs get none
        self.samples += windows * self.input_bits * levels.shape[1]
        result = float32_product(x, weights) if self.int8 else x @ weights
        columns = self._saturable(levels, 1, saturable)
        if not columns.index.size:
            return result
        codes = np.ascontiguousarray(x, np.uint8)  # x is often transposed windows: the sums and recovery read rows
        cut = None
        for b in range(self.input_bits):
            bits = (codes >> b) & 1
            for sums, part, rows_out in self._saturating(bits, columns):
                cut = np.zeros(result.shape) if cut is None else cut
                self.clipped += clip_samples(sums, rows_out, part, low, top, columns.weight,
                                             columns.significance * float(1 << b), cut)
        if cut is not None:
            result -= cut  # float64 integers: exact, as is what they leave (the emulation's result, below 2^24)
        return result

    def _saturable(self, levels: np.ndarray, most_value: int, cache: dict | None) -> SaturableColumns:
        """`saturable_columns` for this ADC, from `cache` where the caller keeps one per levels."""
        cache = {} if cache is None else cache
        if most_value not in cache:
            low, top = self.adc_range
            cache[most_value] = saturable_columns(levels, most_value, low, top, self.cell_bits,
                                                  self.cells_per_weight, self.int8 and most_value < 1 << 7)
        return cache[most_value]

    def _saturating(self, values: np.ndarray, columns: SaturableColumns):
        """The bitline sums of the saturable `columns` for the wordline `values` [windows, rows]
        of one input step, in chunks of at most SUMS_CHUNK samples, where a sample saturates:
        as (the chunk's sums [windows, columns], its windows' indices, the rows of the sums
        where a sample leaves the ADC's range). Windows whose values sum to too little to reach
        the ADC's ends are left out (`saturable_columns`); most of the others have no sample
        out of range either (the bounds are loose), and only each row's extremes are taken."""
        from .kernels import rows_out_of_range

        low, top = self.adc_range
        driven = values.sum(1, dtype=np.int32)
        hot = np.flatnonzero((driven * columns.largest > top) | (driven * columns.most_negative < low))
        chunk = max(1, SUMS_CHUNK // len(columns.index))
        for start in range(0, len(hot), chunk):
            part = hot[start:start + chunk]
            every = len(part) == len(values)  # often every window is hot: no copy of the values then
            sums = self._bitline_sums(values if every else values[part], columns.levels)
            out = np.empty(len(part), bool)
            rows_out_of_range(sums, low, top, out)
            rows_out = np.flatnonzero(out)
            if rows_out.size:
                yield sums, part, rows_out

    @staticmethod
    def _bitline_sums(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """values [windows, rows] uint8 @ levels [rows, columns]: in int8 with int32 sums
        (torch's int8 GEMM on one thread, `int8_bitline_sums`) where the levels are int8
        (`BitSerial.int8`), else in float32, exact (`product` checks that its sums stay below 2^24;
        these are smaller)."""
        if levels.dtype == np.int8:
            return int8_bitline_sums(values.view(np.int8), levels)  # values are at most 2^7 - 1
        return values.astype(np.float32) @ levels

    def sample(self, partial: np.ndarray) -> np.ndarray:
        """The ADC: ideal, or round to `adc_lsb` steps and saturate at the ends of `adc_range`."""
        self.samples += partial.size
        if self.adc_bits is None:
            return partial
        low, top = self.adc_range
        if self.adc_lsb != 1:  # bitline sums are integers: with a unit step there is nothing to round
            partial = np.rint(partial / self.adc_lsb)
        self.clipped += int(np.count_nonzero((partial > top) | (partial < low)))
        np.clip(partial, low, top, out=partial)
        return partial if self.adc_lsb == 1 else partial * self.adc_lsb

    def speculative_product(self, x: np.ndarray, weights: np.ndarray, levels: np.ndarray,
                            slice_bits: int, saturable: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """RAELLA's speculative input slicing through an ADC of unit step (or an ideal one): each
        step drives `slice_bits` bits of every input (slice values 0..2^s - 1 on the wordlines);
        a sample inside the ADC's range is exact; a window's slice where any sample saturated is
        read again bit by bit (recovery), and those samples, through the same ADC, replace the
        saturated ones. Arguments as `clipping_product`; returns the product and a bool
        [windows, input slices] of the recovered window slices (`samples` counts the
        speculative and the recovery samples, `clipped` the recovery samples that saturated,
        `recovered` the speculative samples that saturated)."""
        if self.adc_lsb != 1:
            raise ValueError("speculative input slicing is modelled for an ADC of unit step")
        windows, rows = x.shape
        levels = levels[:rows]
        steps = -(-self.input_bits // slice_bits)
        recovered = np.zeros((windows, steps), bool)
        result = float32_product(x, weights) if self.int8 else x @ weights
        self.samples += windows * steps * levels.shape[1]
        if self.adc_bits is None:
            return result, recovered
        from .kernels import recover_samples

        low, top = self.adc_range
        codes = np.ascontiguousarray(x, np.uint8)  # x is often transposed windows: the sums and recovery read rows
        saturable = {} if saturable is None else saturable
        cut = None
        for step in range(steps):
            first = step * slice_bits
            width = min(slice_bits, self.input_bits - first)
            columns = self._saturable(levels, (1 << width) - 1, saturable)  # the last slice may be narrower
            if not columns.index.size:
                continue
            again = np.zeros(windows, bool)
            for sums, part, rows_out in self._saturating((codes >> first) & ((1 << width) - 1), columns):
                cut = np.zeros(result.shape) if cut is None else cut
                saturated, clipped = recover_samples(sums, rows_out, part, codes, columns.by_column, first, width,
                                                     low, top, columns.weight, columns.significance, cut, again)
                self.recovered += saturated
                self.clipped += clipped
            recovered[:, step] = again
            self.samples += int(again.sum()) * width * levels.shape[1]  # the recovery's single-bit reads
        if cut is not None:
            result -= cut  # exact, as in clipping_product
        return result, recovered


@dataclass
class SaturableColumns:
    """The columns of a crossbar read that can saturate (`saturable_columns`): their `index`
    among the read's columns, their `levels` [rows, len(index)] as the bitline sums take them
    (int8, or float32) and `by_column` (int8 [len(index), rows], as the recovery reads them),
    the largest and most negative level among them, and each one's place in the shift-and-add:
    the `weight` (product column) it holds a slice of, and that slice's `significance`."""

    index: np.ndarray
    levels: np.ndarray
    by_column: np.ndarray
    largest: float
    most_negative: float
    weight: np.ndarray
    significance: np.ndarray


def saturable_columns(levels: np.ndarray, most_value: int, low: int, top: int, cell_bits: int = 1,
                      cells_per_weight: int = 1, int8: bool = False) -> SaturableColumns:
    """The columns of `levels` [rows, columns] (of weights of `cells_per_weight` slices of
    `cell_bits` bits) whose sample can leave low..top for some input with wordline values
    0..most_value.

    A column's sample sum_r v_r l_r lies between most_value x (its negative levels' sum) and
    most_value x (its positive levels' sum), so a column whose bounds stay inside the ADC's range
    never saturates, whatever the input (with 1-bit slices most columns of real weights: their
    upper slices hold few set bits). For the others, a window whose values sum to D (driven rows,
    for single bits) reaches at most D x (their largest level) and at least D x (their most
    negative): windows within these bounds skip the emulation."""
    positive = np.maximum(levels, 0).sum(0, dtype=np.int64) * most_value
    negative = np.minimum(levels, 0).sum(0, dtype=np.int64) * most_value
    index = np.flatnonzero((positive > top) | (negative < low))
    chosen = levels[:, index].astype(np.int8)   # levels are at most 2^cell_bits - 1 in magnitude, cell_bits <= 7
    return SaturableColumns(index, chosen if int8 else chosen.astype(np.float32), np.ascontiguousarray(chosen.T),
                            float(chosen.max(initial=0)), float(chosen.min(initial=0)), index // cells_per_weight,
                            2.0 ** (cell_bits * (index % cells_per_weight)))
