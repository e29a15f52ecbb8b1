"""A Lava LIF neuron with reset by subtraction, which Lava 0.10 does not provide.

``SubtractiveLIF`` has the Vars and ports of ``lava.proc.lif.process.LIF`` (a_in, s_out, u, v,
du, dv, bias_mant, bias_exp, vth) with one difference: ``vth`` holds one threshold per neuron
(shape = the population's shape) instead of one per population.

Its fixed-point model reuses Lava's own sub-threshold integer code (``AbstractPyLifModelFixed``,
the base of ``PyLifModelBitAcc``) unchanged; only the reset differs:

    s = v > vth << 6;   v[s] -= vth << 6        (PyLifModelBitAcc: v[s] = 0)

Because a spiking neuron has v > vth << 6 >= 0, the subtraction never leaves the 24-bit range.
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
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat  # noqa: E402
from lava.proc.lif.process import AbstractLIF  # noqa: E402


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
class PySubtractiveLifModelBitAcc(AbstractPyLifModelFixed):
    """Bit-accurate model: PyLifModelBitAcc's integer dynamics, reset by subtraction."""

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
