"""Typed fixed-point formats: integer ranges, wrap/saturate rules and mantissa-exponent codes.

The formats here are generic; the numbers of one chip live in ``snncompile.targets``.
All arithmetic is exact integer arithmetic on numpy ``int64`` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntFormat:
    """An integer of ``bits`` bits, signed (two's complement) or unsigned, in steps of ``step``.

    ``step`` > 1 models formats whose low bits are always zero, e.g. Lava's mixed-sign 8-bit
    weights, which keep even values only (truncation of one LSB).
    """

    bits: int
    signed: bool = True
    step: int = 1

    @property
    def min(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        top = 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1
        return top - top % self.step

    def contains(self, values: np.ndarray) -> bool:
        v = np.asarray(values)
        if v.size == 0:
            return True
        integer = v.dtype.kind in "iu"
        if not integer and v.dtype.kind != "b" and not np.all(v == np.round(v)):  # integer dtypes hold integers
            return False
        if not (v.min() >= self.min and v.max() <= self.max):
            return False
        if self.step == 1:
            return True
        if integer and self.step & (self.step - 1) == 0:
            # a power of two divides every value iff it divides none of their low bits: one
            # reduction, no array of remainders (the weights of a whole layer)
            return not int(np.bitwise_or.reduce(v, axis=None)) & (self.step - 1)
        return bool(np.all(v % self.step == 0))

    def quantize(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """Round to the nearest representable value, saturating; returns (ints, saturated count)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 0:
            rounded = np.round(v / self.step) * self.step
            clipped = np.clip(rounded, self.min, self.max)
            return clipped.astype(np.int64), int(np.count_nonzero(clipped != rounded))
        return self.quantize_scaled(v, 1.0)

    def quantize_scaled(self, values: np.ndarray, factor: float, block: int = 1 << 17) -> tuple[np.ndarray, int]:
        """``quantize(values * factor)``, the same numbers, a block at a time through one small
        buffer: the float product of a model's weights is never a whole new array (ResNet-18: 93 MB
        of fresh pages per pass)."""
        v = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        out = np.empty(v.shape, dtype=np.int64)
        buf = np.empty(min(block, v.size), dtype=np.float64)
        saturated = 0
        for start in range(0, v.size, block):
            b = buf[: min(block, v.size - start)]
            np.multiply(v[start:start + len(b)], factor, out=b)
            np.divide(b, self.step, out=b)
            np.round(b, out=b)
            if self.step != 1:
                b *= self.step
            top, bottom = float(b.max()), float(b.min())
            if top > self.max or bottom < self.min:
                saturated += int(np.count_nonzero(b > self.max)) + int(np.count_nonzero(b < self.min))
                np.clip(b, self.min, self.max, out=b)
            out[start:start + len(b)] = b
        return out.reshape(np.shape(values)), saturated

    def wrap(self, values: np.ndarray) -> np.ndarray:
        """Two's complement wrap-around into the format (no step)."""
        base = 2**self.bits
        v = np.asarray(values, dtype=np.int64)
        if not self.signed:
            return np.mod(v, base)
        return np.mod(v + base // 2, base) - base // 2


@dataclass(frozen=True)
class MantExpFormat:
    """A value ``mant << exp`` with a signed ``mant_bits`` mantissa and an ``exp_bits`` exponent.

    Loihi's neuron bias is such a value (13-bit mantissa, 3-bit exponent); exponents are
    non-negative here (left shifts only), which is what the chip's bias uses.
    """

    mant_bits: int
    exp_bits: int

    @property
    def mant(self) -> IntFormat:
        return IntFormat(self.mant_bits, signed=True)

    @property
    def max_exp(self) -> int:
        return 2**self.exp_bits - 1

    @property
    def max_value(self) -> int:
        return self.mant.max << self.max_exp

    def encode(self, values: np.ndarray, exp: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """Nearest representable ``mant << exp`` per element, smallest exponent that fits (or the
        given ``exp`` for every element). Returns (mant, exp, saturated count); values beyond the
        largest code saturate.
        """
        v = np.asarray(values, dtype=np.float64)
        if exp is not None:
            mant, sat = self.mant.quantize(v / 2**exp)
            return mant, np.full(v.shape, exp, dtype=np.int64), sat
        mant = np.zeros(v.shape, dtype=np.int64)
        exp = np.full(v.shape, -1, dtype=np.int64)
        for e in range(self.max_exp + 1):
            m = np.round(v / 2**e)
            fits = (exp < 0) & (m >= self.mant.min) & (m <= self.mant.max)
            mant[fits] = m[fits].astype(np.int64)
            exp[fits] = e
        overflow = exp < 0
        mant[overflow] = np.where(v[overflow] > 0, self.mant.max, self.mant.min)
        exp[overflow] = self.max_exp
        return mant, exp, int(np.count_nonzero(overflow))

    def decode(self, mant: np.ndarray, exp: np.ndarray) -> np.ndarray:
        return np.left_shift(np.asarray(mant, dtype=np.int64), np.asarray(exp, dtype=np.int64))

    def contains(self, mant: np.ndarray, exp: np.ndarray) -> bool:
        e = np.asarray(exp)
        return self.mant.contains(mant) and (e.size == 0 or bool(e.min() >= 0 and e.max() <= self.max_exp))
