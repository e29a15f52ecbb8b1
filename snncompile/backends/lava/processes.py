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
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort, PyRefPort  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, RefPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
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


class Recorder(AbstractProcess):
    """Records one population's spikes and membrane potential, every step, into a file.

    Lava's ``Monitor`` keeps what it records in a Var, and ``Monitor.get_data`` brings that Var to
    the host through Lava 0.10's ``Var.get``, which sends an array one element per channel
    message (``AbstractPyProcessModel._get_var``: "FIXME: send a whole vector"): 60 s for the
    11 steps of a ResNet-20 sample. A Recorder reads the same values the same way (``s_in``
    connected to the population's ``s_out``, received in the spiking phase; ``v_ref`` a RefPort on
    its ``v``, read in the post-management phase, as ``PyMonitorModel`` does) and writes them
    into a file-backed array the host maps after the run: ``path`` holds
    int64[2, steps, *shape] (spikes, v), step t at index ``time_step - 1``.
    """

    def __init__(self, *, shape, steps: int, path: str, name=None) -> None:
        super().__init__(shape=tuple(shape), steps=int(steps), path=str(path), name=name)
        self.s_in = InPort(shape=tuple(shape))
        self.v_ref = RefPort(shape=tuple(shape))


@implements(proc=Recorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRecorderModel(PyLoihiProcessModel):
    """Writes each step's spikes (spiking phase) and v (post-management phase) to the file."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, int)
    v_ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, int)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._record = None

    def _out(self) -> np.ndarray:
        if self._record is None:  # opened in the model's own process (Lava forks one per model)
            shape = (2, self.proc_params["steps"], *self.proc_params["shape"])
            self._record = np.memmap(self.proc_params["path"], dtype=np.int64, mode="r+", shape=shape)
        return self._record

    def run_spk(self) -> None:
        self._out()[0, self.time_step - 1] = self.s_in.recv()

    def post_guard(self) -> bool:
        return True

    def run_post_mgmt(self) -> None:
        self._out()[1, self.time_step - 1] = self.v_ref.read()
