"""Intel Loihi 2: the chip's numbers and limits, each with its source, in one place.

Arithmetic widths are read from Lava 0.10's bit-accurate process models
(``lava/proc/lif/models.py`` PyLifModelBitAcc, ``lava/proc/dense/models.py``
PyDenseModelBitAcc, ``lava/proc/conv/models.py`` PyConvModelFixed, and
``lava/utils/weightutils.py``), which are the stand-in for the chip in this project.
Resource figures (cores, neurons, synapses) come from Intel's public Loihi 2 brief; per-core
limits are not published and are conservative defaults, each derivation stated where it is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from snncompile.ir.fixed_point import IntFormat, MantExpFormat

CORES_PER_CHIP = 128
NEURONS_PER_CHIP = 1_000_000
SYNAPSES_PER_CHIP = 120_000_000
CHIP_SYNAPSE_BITS = 1  # the bits per synapse the chip's synapse count assumes (see Loihi2)


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
    # Lava 0.10 agrees on the cores: NUM_VIRTUAL_CORES_L2 = 128 (magma/compiler/subcompilers/constants.py).
    cores_per_chip: int = CORES_PER_CHIP
    neurons_per_chip: int = NEURONS_PER_CHIP
    synapses_per_chip: int = SYNAPSES_PER_CHIP

    # Per-core limits (the resource model: targets/loihi2_cores.py; placement: passes/partition.py).
    # Intel publishes none of these for Loihi 2; each is labelled PUBLISHED (a Loihi 1 or chip-level
    # figure, with its source) or ASSUMED (our reading). Lower or raise them with
    # dataclasses.replace(LOIHI2, ...).
    # Neurons: ASSUMED from the PUBLISHED chip figure, 1,000,000 / 128 = 7812.5, rounded down (if
    # the brief's "1 M" means 2**20 the figure would be 8192; we take the smaller). Loihi 1 had
    # 1,024 compartments per core (PUBLISHED: Davies et al., "Loihi: A Neuromorphic Manycore
    # Processor with On-Chip Learning", IEEE Micro 38(1), 2018; nengo-loihi block.py
    # MAX_COMPARTMENTS).
    neurons_per_core: int = NEURONS_PER_CHIP // CORES_PER_CHIP
    # Synaptic memory: ASSUMED. The chip's PUBLISHED 120 M synapses spread over 128 cores, each
    # synapse counted at CHIP_SYNAPSE_BITS = 1 bit, the densest weight format. Loihi 1 fits that
    # reading: 128 KB of synaptic memory per core (PUBLISHED, Davies et al. 2018), 1 Mbit in
    # nengo-loihi (block.py MAX_SYNAPSE_BITS = 1,048,576). 120e6 bits / 8 / 128 = 117,187 bytes.
    synapse_bytes_per_core: int = SYNAPSES_PER_CHIP * CHIP_SYNAPSE_BITS // 8 // CORES_PER_CHIP
    # Input axons (one per source neuron a core receives spikes from; per source pixel for a
    # convolution's population axons) and output axons (one per source neuron and destination
    # core; the neurons of one pixel share theirs towards a convolution): 4,096 and 4,096 per core,
    # Loihi 1's PUBLISHED figures (Davies et al. 2018; nengo-loihi block.py MAX_IN_AXONS,
    # MAX_OUT_AXONS), ASSUMED unchanged on Loihi 2.
    fan_in_per_core: int = 4096
    fan_out_per_core: int = 4096
    # Bytes one stored synapse takes: its weight (Lava's num_weight_bits = 8). ASSUMED: zero
    # weights are not stored; a sparse format's per-synapse index bits are not modelled.
    weight_bytes: int = 1
    # Bytes of synaptic memory per input axon: one 64-bit word, ASSUMED from nengo-loihi's Loihi 1
    # model (SynapseConfig.bits_per_axon: a 10-bit synapse-list header, rounded up to 64-bit words).
    axon_bytes: int = 8

    # Energy per operation, for the report's estimate only. These are LOIHI 1 figures (Davies et
    # al., "Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro 38(1),
    # 2018, Table 2): 23.6 pJ per synaptic spike operation (the table's minimum), 52 pJ
    # per inactive and 81 pJ per active neuron update. Intel has published no Loihi 2 equivalents.
    synop_energy_pj: float = 23.6
    neuron_update_energy_pj: float = 52.0
    active_neuron_update_energy_pj: float = 81.0

    @property
    def vth_max(self) -> int:
        return self.vth.max

    @property
    def v_max(self) -> int:
        return 2 ** (self.state.bits - 1) - 1


LOIHI2 = Loihi2()
