"""Lava LIF neurons with reset by subtraction and with signed spikes, which Lava 0.10 does not
provide, and Lava's LIF and these recording their spikes and v where they compute them
(``Recording``) and running samples back to back from a fresh state each (``Samples``).

``SubtractiveLIF`` has the Vars and ports of ``lava.proc.lif.process.LIF`` (a_in, s_out, u, v,
du, dv, bias_mant, bias_exp, vth) with one difference: ``vth`` holds one threshold per neuron
(shape = the population's shape) instead of one per population. ``SignedLIF`` (``Reset.SIGNED``)
has the same, plus ``sent``: per neuron the sum of the spikes it has sent (0 at the start of
every sample).

Their fixed-point models reuse Lava's own sub-threshold integer code (``AbstractPyLifModelFixed``,
the base of ``PyLifModelBitAcc``) unchanged; only the spike and the reset differ. With
Θ = vth << 6:

    SubtractiveLIF:  s = v > Θ;   v[s] -= Θ                         (PyLifModelBitAcc: v[s] = 0)
    SignedLIF:       s = +1 where v > Θ, −1 where v <= 0 and sent > 0, else 0;
                     v -= s·Θ;   sent += s;   s_out sends s (int32: −1 / 0 / +1)

Because a neuron spiking +1 has v > Θ >= 0 and one spiking −1 has v <= 0 (and v >= −(2**23 − 1)
after Lava's clip), neither update leaves the 24-bit range. A synapse reading a SignedLIF must
treat its spikes as graded payloads (Lava's Dense and Conv with ``num_message_bits`` > 0: they
then add s·weight; with 0 they would read −1 as a spike of +1).
Lava's compiler finds the models below because they live in the process's own module.

This module is imported (and re-executed as a top-level module) by Lava's model search, so it
must use absolute imports and have no side effects beyond class definitions.
"""

from __future__ import annotations

import numpy as np

from snncompile.backends.lava import compat

compat.install()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.ports import PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat, PyLifModelBitAcc  # noqa: E402
from lava.proc.lif.process import LIF, AbstractLIF  # noqa: E402


class Recording:
    """Mixin of the fixed-point neuron models: after each step's ``run_spk`` (Lava's own code,
    unchanged), that step's spikes and membrane potential after the reset go into the file
    ``proc_params["record"]`` (when given), int64[2, steps, *shape] (spikes, v), step t at index
    ``time_step - 1``; the host maps it after the run.

    Lava's ``Monitor`` keeps what it records in a Var, and ``Monitor.get_data`` brings that Var
    to the host through Lava 0.10's ``Var.get``, which sends an array one element per channel
    message (``AbstractPyProcessModel._get_var``: "FIXME: send a whole vector"): 60 s for the
    11 steps of a ResNet-20 sample. A separate recording process (an InPort on ``s_out``, a
    RefPort on ``v`` read in the post-management phase, as ``PyMonitorModel`` does) costs one
    more process per population and a management phase every step: a 32×32 MobileNet-V2
    (149 populations) ran 6 min a sample that way, most of it Lava's per-step synchronisation of
    ~450 processes on 2 cores. Recording where the values are computed reads the same numbers
    (``s_out_buff`` is what ``run_spk`` sends, ``v`` what a RefPort reads in that step's
    management phase) without either."""

    def _record(self):
        record = getattr(self, "_record_file", False)
        if record is False:  # opened in the model's own process (Lava forks one per model)
            path = self.proc_params.get("record")
            record = None
            if path is not None:
                shape = (2, self.proc_params["steps"], *self.proc_params["shape"])
                record = np.memmap(path, dtype=np.int64, mode="r+", shape=shape)
            self._record_file = record
        return record

    def run_spk(self) -> None:
        super().run_spk()
        record = self._record()
        if record is not None:
            record[0, self.time_step - 1] = self.s_out_buff
            record[1, self.time_step - 1] = self.v


class Samples:
    """Mixin of the fixed-point neuron models: several samples run back to back in one network,
    ``proc_params["sample_steps"]`` steps each (when given). At the first step of each later
    sample the population starts as a fresh network's would:

    - u = 0 and v = the v it started the first sample with (its ``v_init``); the Vars named in
      ``zero_each_sample`` = 0 (SignedLIF's ``sent``: a fresh network has sent no spikes);
    - bias_mant / bias_exp = that sample's, from ``proc_params["sample_bias"]`` ((mant, exp), one
      row per sample) where the population takes the host's input, else its own;
    - no synaptic input. Every Dense and Conv delivers at step t what it received at step t − 1
      (its one-step buffer): at a sample's first step that is the previous sample's last spikes,
      where a fresh network's buffers hold zeros. So ``subthr_dynamics`` (Lava's code) gets zeros.

    Lava's own way, ``Var.set`` on a paused runtime, sends a Var one element per channel message:
    ~14 s a sample for a 32×32 MobileNet-V2, twice its 43-step run. The step's arithmetic stays
    Lava's; only the state a new sample starts from is written here."""

    # state besides u that every sample starts at 0 (SignedLIF: the spikes sent so far)
    zero_each_sample: tuple[str, ...] = ()

    def run_spk(self) -> None:
        every = self.proc_params.get("sample_steps")
        self._fresh = False
        if every and (self.time_step - 1) % every == 0:
            if self.time_step == 1:
                self._start = self.v.copy()
            else:
                sample = (self.time_step - 1) // every
                self.u[:] = 0
                for name in self.zero_each_sample:
                    getattr(self, name)[:] = 0
                self.v[:] = self._start
                bias = self.proc_params.get("sample_bias")
                if bias is not None:
                    self.bias_mant[:] = bias[0][sample]
                    self.bias_exp[:] = bias[1][sample]
                self._fresh = True
        super().run_spk()

    def subthr_dynamics(self, activation_in: np.ndarray):
        if self._fresh:
            activation_in = np.zeros_like(activation_in)
        super().subthr_dynamics(activation_in=activation_in)


class SubtractiveLIF(AbstractLIF):
    """Leaky integrate-and-fire neurons that subtract the threshold when they spike.

    u[t] = u[t-1]·(1 − du) + a_in;   v[t] = v[t-1]·(1 − dv) + u[t] + bias;
    s[t] = v[t] > vth;   v[t] −= vth where s[t]      (fixed_pt: exact Loihi integers, see module)

    ``vth`` is a scalar or an array of the population's shape.
    """

    def __init__(self, *, shape, u=0, v=0, du=0, dv=0, bias_mant=0, bias_exp=0, vth=10,
                 name=None, log_config=None, **kwargs) -> None:
        super().__init__(shape=shape, u=u, v=v, du=du, dv=dv, bias_mant=bias_mant,
                         bias_exp=bias_exp, name=name, log_config=log_config, **kwargs)
        self.vth = Var(shape=tuple(shape), init=vth)


@implements(proc=SubtractiveLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PySubtractiveLifModelBitAcc(Recording, Samples, AbstractPyLifModelFixed):
    """Bit-accurate model: PyLifModelBitAcc's integer dynamics, reset by subtraction; records
    each step when built with ``record=path, steps=n`` (``Recording``); samples back to back
    (``Samples``)."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.effective_vth = 0

    def scale_threshold(self):
        self.effective_vth = np.left_shift(self.vth.astype(np.int32), self.vth_shift)
        self.isthrscaled = True

    def spiking_activation(self):
        return self.v > self.effective_vth

    def reset_voltage(self, spike_vector: np.ndarray):
        self.v[:] = np.where(spike_vector, self.v - self.effective_vth, self.v)


@implements(proc=SubtractiveLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySubtractiveLifModelFloat(AbstractPyLifModelFloat):
    """Float model (like PyLifModelFloat it ignores bias_exp), reset by subtraction."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)

    def spiking_activation(self):
        return self.v > self.vth

    def reset_voltage(self, spike_vector: np.ndarray):
        self.v[:] = np.where(spike_vector, self.v - self.vth, self.v)


class SignedLIF(SubtractiveLIF):
    """Leaky integrate-and-fire neurons with signed spikes (``Reset.SIGNED``): reset by
    subtraction, and a spike of −1 taking back an earlier one when v has fallen to 0 or below.

    u[t] = u[t-1]·(1 − du) + a_in;   v[t] = v[t-1]·(1 − dv) + u[t] + bias;
    s[t] = +1 where v[t] > vth, −1 where v[t] <= 0 and sent > 0, else 0;
    v[t] −= s[t]·vth;   sent += s[t]      (fixed_pt: exact Loihi integers, see module)

    ``vth`` is a scalar or an array of the population's shape; ``sent`` (the sum of the spikes
    sent so far) starts at 0. s_out carries s: connect it to a Dense or Conv with
    ``num_message_bits`` > 0. (Its own class: Lava picks a process's models by its exact type.)
    """

    def __init__(self, *, shape, **kwargs) -> None:
        super().__init__(shape=shape, **kwargs)
        self.sent = Var(shape=tuple(shape), init=0)


@implements(proc=SignedLIF, protocol=LoihiProtocol)
class PySignedLifModelBitAcc(PySubtractiveLifModelBitAcc):
    """Bit-accurate model: PySubtractiveLifModelBitAcc (its tags, resources, types, per-neuron
    threshold, recording and samples) with signed spikes (see module); records the signed s it
    sends; ``sent`` = 0 at each sample's start (``Samples``)."""

    implements_process = None  # inherited (SubtractiveLIF); ``implements`` sets ours
    # s_out is int32 already (inherited): −1 reaches the synapses as −1 (Lava's LIF sends bools)
    sent: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    zero_each_sample = ("sent",)

    def spiking_activation(self):
        up = self.v > self.effective_vth
        down = (self.v <= 0) & (self.sent > 0)
        return up.astype(np.int32) - down.astype(np.int32)

    def reset_voltage(self, spike_vector: np.ndarray):
        self.v[:] = self.v - spike_vector * self.effective_vth
        self.sent[:] = self.sent + spike_vector


@implements(proc=SignedLIF, protocol=LoihiProtocol)
class PySignedLifModelFloat(PySubtractiveLifModelFloat):
    """Float model: PySubtractiveLifModelFloat's (its tags, types; it ignores bias_exp), signed
    spikes."""

    implements_process = None  # inherited (SubtractiveLIF); ``implements`` sets ours
    sent: np.ndarray = LavaPyType(np.ndarray, float)

    def spiking_activation(self):
        return (self.v > self.vth).astype(float) - ((self.v <= 0) & (self.sent > 0)).astype(float)

    def reset_voltage(self, spike_vector: np.ndarray):
        self.v[:] = self.v - spike_vector * self.vth
        self.sent[:] = self.sent + spike_vector


class RecordedLIF(LIF):
    """Lava's ``LIF`` process; its fixed-point model is Lava's ``PyLifModelBitAcc`` that also
    records (``Recording``; pass ``record=path, steps=n``) and runs samples back to back
    (``Samples``; pass ``sample_steps=``, ``sample_bias=``)."""


@implements(proc=RecordedLIF, protocol=LoihiProtocol)
class PyRecordedLifModelBitAcc(Recording, Samples, PyLifModelBitAcc):
    """``PyLifModelBitAcc`` (its tags, resources, types and code), recording each step and
    starting each sample afresh."""

    implements_process = None  # inherited from PyLifModelBitAcc (LIF); ``implements`` sets ours
