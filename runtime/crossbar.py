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
  (saturable columns) for each input bit, are float32 GEMMs of about 9x the ideal product's
  multiply-adds on ResNet-50, where the window bound alone gave 23x; only the windows where one
  saturates go further. (int8 GEMMs, torch._int_mm, were 1.4x faster on one thread but up to 10x
  slower on two threads of a loaded machine: torch's threads wait spinning.) ResNet-50's
  interpreter with 1-bit slices: 36.7x PyTorch fp32 eager, was 97.4x (docs/results.md).
  `speculative_product` bounds its wider input slices the same way and replaces only the
  saturated samples (73.0x, was 150.6x). The machine keeps each read's weights, levels and saturable columns per (layer, blocks held), as
  they depend only on the weights written (runtime/machine.py `_shortcut_operands`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        if self.adc_bits is None or self.adc_lsb != 1:
            raise ValueError("clipping_product models a finite ADC of unit step")
        low, top = self.adc_range
        windows, rows = x.shape
        levels = levels[:rows]  # rows past the inputs get none
        self.samples += windows * self.input_bits * levels.shape[1]
        result = x @ weights
        columns = self._saturable(levels, 1, saturable)
        if not columns.index.size:
            return result
        codes = x.astype(np.uint8)
        for b in range(self.input_bits):
            bits = (codes >> b) & 1
            driven = bits.sum(1, dtype=np.int32)
            hot = np.flatnonzero((driven * columns.largest > top) | (driven * columns.most_negative < low))
            for sums, windows_read in self._saturating(bits, hot, columns):
                excess = np.maximum(sums - top, 0) + np.minimum(sums - low, 0)
                self.clipped += int(np.count_nonzero(excess))
                every = np.zeros((len(windows_read), levels.shape[1]), np.float32)
                every[:, columns.index] = excess
                result[windows_read] -= self._shift_add(every) * float(1 << b)
        return result

    def _saturable(self, levels: np.ndarray, most_value: int, cache: dict | None) -> SaturableColumns:
        """`saturable_columns` for this ADC, from `cache` where the caller keeps one per levels."""
        cache = {} if cache is None else cache
        if most_value not in cache:
            low, top = self.adc_range
            cache[most_value] = saturable_columns(levels, most_value, low, top)
        return cache[most_value]

    def _saturating(self, values: np.ndarray, hot: np.ndarray, columns: SaturableColumns):
        """The bitline sums of the saturable `columns` for the hot windows' wordline `values`,
        made in chunks of at most SUMS_CHUNK samples, of the windows where one saturates: as
        (their sums [windows, columns], their indices). Most windows have none (the bounds are
        loose), and only a per-window maximum and minimum are taken of theirs."""
        if not hot.size:
            return
        chunk = max(1, SUMS_CHUNK // len(columns.index))
        low, top = self.adc_range
        for start in range(0, len(hot), chunk):
            part = hot[start:start + chunk]
            sums = self._bitline_sums(values[part], columns.levels)
            saturating = np.flatnonzero((sums.max(1) > top) | (sums.min(1) < low))
            if saturating.size:
                yield sums[saturating], part[saturating]

    @staticmethod
    def _bitline_sums(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """values [windows, rows] uint8 @ levels [rows, columns] float32, exact in float32
        (`product` checks that its sums stay below 2^24; these are smaller)."""
        return values.astype(np.float32) @ levels

    def _shift_add(self, samples: np.ndarray) -> np.ndarray:
        """[windows, weights]: the periphery's shift-and-add over the cells of `samples` [windows,
        every column of the read] of one input step."""
        cell_weight = (2.0 ** (self.cell_bits * np.arange(self.cells_per_weight))).astype(np.float32)
        return samples.reshape(len(samples), -1, self.cells_per_weight) @ cell_weight

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
        levels = levels[:rows].astype(np.float32)
        steps = -(-self.input_bits // slice_bits)
        recovered = np.zeros((windows, steps), bool)
        result = x @ weights
        self.samples += windows * steps * levels.shape[1]
        if self.adc_bits is None:
            return result, recovered
        low, top = self.adc_range
        codes = x.astype(np.uint8)
        saturable = {} if saturable is None else saturable
        for step in range(steps):
            first = step * slice_bits
            width = min(slice_bits, self.input_bits - first)
            columns = self._saturable(levels, (1 << width) - 1, saturable)  # the last slice may be narrower
            if not columns.index.size:
                continue
            values = (codes >> first) & ((1 << width) - 1)
            driven = values.sum(1, dtype=np.int32)
            hot = np.flatnonzero((driven * columns.largest > top) | (driven * columns.most_negative < low))
            for speculative, again_windows in self._saturating(values, hot, columns):
                saturated = (speculative > top) | (speculative < low)
                self.recovered += int(np.count_nonzero(saturated))
                recovered[again_windows, step] = True
                self.samples += len(again_windows) * width * levels.shape[1]
                # only the saturated samples are replaced: their windows' sums of the columns that hold one
                read_again = np.flatnonzero(saturated.any(0))
                window, column = np.nonzero(saturated[:, read_again])
                cut = np.zeros(len(window), np.float32)
                for b in range(first, first + width):
                    sums = self._bitline_sums((codes[again_windows] >> b) & 1, columns.levels[:, read_again])
                    sample = sums[window, column]
                    excess = np.maximum(sample - top, 0) + np.minimum(sample - low, 0)
                    self.clipped += int(np.count_nonzero(excess))
                    cut += excess * float(1 << b)
                every = np.zeros((len(again_windows), levels.shape[1]), np.float32)
                every[window, columns.index[read_again][column]] = cut
                result[again_windows] -= self._shift_add(every)
        return result, recovered


@dataclass
class SaturableColumns:
    """The columns of a crossbar read that can saturate (`saturable_columns`): their `index`
    among the read's columns, their `levels` float32 [rows, len(index)], and the largest and
    most negative level among them."""

    index: np.ndarray
    levels: np.ndarray
    largest: float
    most_negative: float


def saturable_columns(levels: np.ndarray, most_value: int, low: int, top: int) -> SaturableColumns:
    """The columns of `levels` [rows, columns] whose sample can leave low..top for some input
    with wordline values 0..most_value.

    A column's sample sum_r v_r l_r lies between most_value x (its negative levels' sum) and
    most_value x (its positive levels' sum), so a column whose bounds stay inside the ADC's range
    never saturates, whatever the input (with 1-bit slices most columns of real weights: their
    upper slices hold few set bits). For the others, a window whose values sum to D (driven rows,
    for single bits) reaches at most D x (their largest level) and at least D x (their most
    negative): windows within these bounds skip the emulation."""
    positive = np.maximum(levels, 0).sum(0, dtype=np.int64) * most_value
    negative = np.minimum(levels, 0).sum(0, dtype=np.int64) * most_value
    index = np.flatnonzero((positive > top) | (negative < low))
    chosen = levels[:, index].astype(np.float32)
    return SaturableColumns(index, chosen, float(chosen.max(initial=0)), float(chosen.min(initial=0)))
