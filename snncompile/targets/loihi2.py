"""Intel Loihi 2: the chip's numbers and limits, each with its source, in one place.

Arithmetic widths are read from Lava 0.10's bit-accurate process models
(``lava/proc/lif/models.py`` PyLifModelBitAcc, ``lava/proc/dense/models.py``
PyDenseModelBitAcc, ``lava/proc/conv/models.py`` PyConvModelFixed, and
``lava/utils/weightutils.py``), which are the stand-in for the chip in this project.
"""

from __future__ import annotations

from dataclasses import dataclass

from snncompile.ir.fixed_point import IntFormat, MantExpFormat


@dataclass(frozen=True)
class Loihi2:
    name: str = "loihi2"
    # Synaptic weights: Dense clips to [-256, 255] (clip_weights, num_bits=8) and, in MIXED sign
    # mode with num_weight_bits=8, truncates one LSB (truncate_weights): even values in
    # [-256, 254]. We use the same set for Conv, whose Lava model does not clip at all.
    weight: IntFormat = IntFormat(bits=9, signed=True, step=2)
    # Threshold: vth is 17-bit unsigned (PyLifModelBitAcc docstring), compared as vth << 6.
    vth: IntFormat = IntFormat(bits=17, signed=False)
    # Bias: 13-bit signed mantissa, 3-bit exponent, added to v unshifted.
    bias: MantExpFormat = MantExpFormat(mant_bits=13, exp_bits=3)
    # Neuron state u, v: 24-bit. u wraps, v saturates at +-(2**23 - 1).
    state: IntFormat = IntFormat(bits=24, signed=True)
    # Decays du, dv: 12-bit unsigned.
    decay: IntFormat = IntFormat(bits=12, signed=False)
    # Synaptic input a_in is declared 16-bit in Lava's LIF model, but Lava does not wrap it;
    # we simulate what Lava does and count values beyond 16 bits as overflow.
    a_in: IntFormat = IntFormat(bits=16, signed=True)
    # Conv output is wrapped to signed 24 bits (conv.utils.signed_clamp is a modulo wrap).
    conv_out: IntFormat = IntFormat(bits=24, signed=True)
    act_shift: int = 6  # a_in << 6 enters u
    vth_shift: int = 6  # v is compared with vth << 6
    decay_shift: int = 12  # decays are in units of 1/4096

    # Chip-level figures (Intel's Loihi 2 brief, "Taking Neuromorphic Computing to the Next
    # Level with Loihi 2", 2021): 128 neuro-cores, up to 1 M neurons and 120 M synapses per chip.
    cores_per_chip: int = 128
    neurons_per_chip: int = 1_000_000
    synapses_per_chip: int = 120_000_000

    @property
    def vth_max(self) -> int:
        return self.vth.max

    @property
    def v_max(self) -> int:
        return 2 ** (self.state.bits - 1) - 1


LOIHI2 = Loihi2()
