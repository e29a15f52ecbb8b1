"""IR operations: one frozen dataclass per kind, its discrete-time equations in the docstring.

Shapes exclude batch and time (NIR's convention): an image is (C, H, W), a vector (N,).
Time is discrete; one step is one tick of the chip. Parameters are read-only numpy arrays.

Float ops (what frontends produce) and fixed-point ops (what ``quantize`` produces for Loihi 2)
share one graph type. In the time-stepped simulation every synaptic op (Dense, Conv2d and their
fixed twins) whose input comes from a neuron delays its output by one step, as Lava's
bit-accurate models do; a synaptic op fed by the Input runs on the host and has no delay.
"""

from __future__ import annotations

import enum
import math
import weakref
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from snncompile.ir.fixed_point import IntFormat, MantExpFormat

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """An op cannot accept the shapes it is given; the verifier adds the node name."""


# arrays handed over by ``owned``: read-only views whose memory (a torch tensor's) nothing else holds
_OWNED: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()


def owned(value: np.ndarray) -> np.ndarray:
    """``value``, an array just computed that nothing else holds or writes, made read-only so that
    an op takes it as is (``frozen_array`` shares it instead of copying it). A view of a tensor
    the caller made (``t.numpy()``) may be passed: its memory belongs to that tensor alone."""
    value.setflags(write=False)
    if value.base is not None:
        _OWNED[id(value)] = value
    return value


def frozen_array(value, dtype=np.float64) -> np.ndarray:
    """A read-only copy of ``value`` (an array that is already read-only, of ``dtype`` and owning
    its data or handed over by ``owned``, is shared instead: ops pass weights on without copying
    hundreds of MB)."""
    if (isinstance(value, np.ndarray) and value.dtype == dtype and not value.flags.writeable
            and (value.base is None or _OWNED.get(id(value)) is value)):
        return value
    arr = np.array(value, dtype=dtype, copy=True)
    arr.setflags(write=False)
    return arr


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        a, b = value
        return int(a), int(b)
    return int(value), int(value)


class Reset(str, enum.Enum):
    """What a neuron's membrane does after a spike.

    ``SIGNED`` is reset by subtraction with signed spikes (after the signed neuron with memory,
    Wang et al., IJCAI 2022): the neuron keeps n, the spikes it has sent (+1 each, −1 each), and
    besides s = +1 where v > threshold (v −= threshold) it sends s = −1 where v ≤ 0 and n > 0
    (v += threshold): a spike sent on early excitation is taken back when later inhibition
    arrives. So while n > 0, v stays in (0, threshold] and n follows the charge so far,
    ⌈(Σ input + v_init) / threshold⌉ − 1, as a ReLU's rate does, instead of its running maximum.
    Its spikes are graded payloads −1 / 0 / +1 (Loihi 2's graded spikes; Lava's Dense and Conv
    with ``num_message_bits`` > 0), so a synapse adds ``s · weight``."""

    ZERO = "zero"
    SUBTRACT = "subtract"
    SIGNED = "signed"


class OpKind(str, enum.Enum):
    INPUT = "Input"
    OUTPUT = "Output"
    DENSE = "Dense"
    CONV2D = "Conv2d"
    BATCHNORM = "BatchNorm"
    RELU = "ReLU"
    AVGPOOL2D = "AvgPool2d"
    SUMPOOL2D = "SumPool2d"
    MAXPOOL2D = "MaxPool2d"
    ADAPTIVE_AVGPOOL2D = "AdaptiveAvgPool2d"
    FLATTEN = "Flatten"
    ADD = "Add"
    CONCAT = "Concat"
    IF = "IF"
    LIF = "LIF"
    INTEGRATOR = "Integrator"
    FIXED_DENSE = "FixedDense"
    FIXED_CONV2D = "FixedConv2d"
    BIAS_ENCODER = "BiasEncoder"
    LOIHI_NEURON = "LoihiNeuron"


@dataclass(frozen=True, eq=False)
class Op:
    """Base of all ops. ``arity`` is the number of inputs; equality compares every field."""

    kind: ClassVar[OpKind]
    arity: ClassVar[int] = 1
    synaptic: ClassVar[bool] = False  # a weighted connection (delays by one step between neurons)
    neuron: ClassVar[bool] = False  # holds a membrane over time
    fixed: ClassVar[bool] = False  # integer op of the fixed-point level

    def infer_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        return shape

    def check(self) -> list[str]:
        """Problems with the op's own parameters (empty when valid)."""
        return []

    def checked(self) -> list[str]:
        """``check()``, computed once: an op and its read-only arrays never change (the verifier
        runs after every pass and most ops pass through many passes unchanged)."""
        found = self.__dict__.get("_checked")
        if found is None:
            found = tuple(self.check())
            object.__setattr__(self, "_checked", found)
        return list(found)

    def __eq__(self, other) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            parts.append(f"{f.name}=<{v.dtype}{list(v.shape)}>" if isinstance(v, np.ndarray) else f"{f.name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _finite(name: str, arr: np.ndarray | None) -> list[str]:
    if arr is None or np.asarray(arr).dtype.kind in "biu":
        return []
    # a finite sum means every value is finite (a NaN or an infinity would make it non-finite);
    # only a non-finite sum, possibly an overflow of finite values, needs the element-wise test
    if np.isfinite(np.sum(arr)) or np.all(np.isfinite(arr)):
        return []
    return [f"{name} has non-finite values"]


@dataclass(frozen=True, eq=False)
class Input(Op):
    """A graph input of shape ``shape``; its value is constant over the simulated steps."""

    kind = OpKind.INPUT
    arity = 0
    shape: Shape = ()

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    def infer_shape(self, inputs):
        return self.shape


@dataclass(frozen=True, eq=False)
class Output(Op):
    """A graph output. Fed by a neuron it reads that neuron's membrane v after the last step."""

    kind = OpKind.OUTPUT


@dataclass(frozen=True, eq=False)
class Dense(Op):
    """y = W x + b, with W of shape (out, in); x of any shape is read in C-order (flattened)."""

    kind = OpKind.DENSE
    synaptic = True
    weight: np.ndarray = None
    bias: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "weight", frozen_array(self.weight))
        if self.bias is not None:
            object.__setattr__(self, "bias", frozen_array(self.bias))

    def infer_shape(self, inputs):
        # A multi-dimensional input is read in C-order flattening (a Flatten folded in).
        (shape,) = inputs
        if math.prod(shape) != self.weight.shape[1]:
            raise ShapeError(f"{self.kind.value} expects {self.weight.shape[1]} inputs, got shape {shape}")
        return (self.weight.shape[0],)

    def check(self):
        problems = _finite("weight", self.weight) + _finite("bias", self.bias)
        if self.weight.ndim != 2:
            problems.append(f"weight must be 2-D, got shape {self.weight.shape}")
        elif self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            problems.append(f"bias shape {self.bias.shape} != ({self.weight.shape[0]},)")
        return problems


def conv_output_hw(hw, kernel, stride, padding, dilation) -> tuple[int, int]:
    out = []
    for size, k, s, p, d in zip(hw, kernel, stride, padding, dilation):
        out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
    return tuple(out)


def ungrouped(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped kernel (out, in/groups, kH, kW) as its groups=1 equivalent (out, in, kH, kW):
    each group's block on the diagonal, zeros between groups."""
    if groups == 1:
        return weight
    out, in_g = weight.shape[:2]
    out_g = out // groups
    full = np.zeros((out, in_g * groups) + tuple(weight.shape[2:]), dtype=weight.dtype)
    for g in range(groups):
        full[g * out_g:(g + 1) * out_g, g * in_g:(g + 1) * in_g] = weight[g * out_g:(g + 1) * out_g]
    return full


@dataclass(frozen=True, eq=False)
class Conv2d(Op):
    """y[o] = b[o] + sum_i W[o, i] ⋆ x[i]: torch's cross-correlation, weight (out, in/groups, kH, kW)."""

    kind = OpKind.CONV2D
    synaptic = True
    weight: np.ndarray = None
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self):
        object.__setattr__(self, "weight", frozen_array(self.weight))
        if self.bias is not None:
            object.__setattr__(self, "bias", frozen_array(self.bias))
        for name in ("stride", "padding", "dilation"):
            object.__setattr__(self, name, _pair(getattr(self, name)))

    def infer_shape(self, inputs):
        (shape,) = inputs
        out_c, in_c_g = self.weight.shape[:2]
        if len(shape) != 3 or shape[0] != in_c_g * self.groups:
            raise ShapeError(f"Conv2d expects ({in_c_g * self.groups}, H, W), got {shape}")
        h, w = conv_output_hw(shape[1:], self.weight.shape[2:], self.stride, self.padding, self.dilation)
        if h <= 0 or w <= 0:
            raise ShapeError(f"Conv2d output would be empty for input {shape}")
        return (out_c, h, w)

    def check(self):
        problems = _finite("weight", self.weight) + _finite("bias", self.bias)
        if self.weight.ndim != 4:
            problems.append(f"weight must be 4-D, got shape {self.weight.shape}")
        elif self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            problems.append(f"bias shape {self.bias.shape} != ({self.weight.shape[0]},)")
        return problems


@dataclass(frozen=True, eq=False)
class BatchNorm(Op):
    """y[c] = (x[c] − mean[c]) / sqrt(var[c] + eps) · gamma[c] + beta[c], channel = first axis."""

    kind = OpKind.BATCHNORM
    mean: np.ndarray = None
    var: np.ndarray = None
    gamma: np.ndarray = None
    beta: np.ndarray = None
    eps: float = 1e-5

    def __post_init__(self):
        for name in ("mean", "var", "gamma", "beta"):
            object.__setattr__(self, name, frozen_array(getattr(self, name)))

    def infer_shape(self, inputs):
        (shape,) = inputs
        if not shape or shape[0] != self.mean.shape[0]:
            raise ShapeError(f"BatchNorm over {self.mean.shape[0]} channels, got input {shape}")
        return shape

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        scale = self.gamma / np.sqrt(self.var + self.eps)
        return scale, self.beta - self.mean * scale

    def check(self):
        problems = []
        for name in ("mean", "var", "gamma", "beta"):
            problems += _finite(name, getattr(self, name))
        if np.any(self.var < 0):
            problems.append("var has negative values")
        return problems


@dataclass(frozen=True, eq=False)
class ReLU(Op):
    """y = max(x, 0), or min(max(x, 0), upper) for a clipped ReLU (ReLU6, Hardtanh(0, a),
    clamp(0, a)) when ``upper`` is set."""

    kind = OpKind.RELU
    upper: float | None = None

    def __post_init__(self):
        if self.upper is not None:
            object.__setattr__(self, "upper", float(self.upper))

    def check(self):
        if self.upper is not None and not (np.isfinite(self.upper) and self.upper > 0):
            return [f"upper clip must be a positive number, got {self.upper}"]
        return []


@dataclass(frozen=True, eq=False)
class AvgPool2d(Op):
    """y[c, i, j] = mean over the kernel window (zero padding counted, torch's default)."""

    kind = OpKind.AVGPOOL2D
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self):
        for name in ("kernel", "stride", "padding"):
            object.__setattr__(self, name, _pair(getattr(self, name)))

    def infer_shape(self, inputs):
        (shape,) = inputs
        if len(shape) != 3:
            raise ShapeError(f"AvgPool2d expects (C, H, W), got {shape}")
        h, w = conv_output_hw(shape[1:], self.kernel, self.stride, self.padding, (1, 1))
        if h <= 0 or w <= 0:
            raise ShapeError(f"AvgPool2d output would be empty for input {shape}")
        return (shape[0], h, w)


@dataclass(frozen=True, eq=False)
class SumPool2d(AvgPool2d):
    """y[c, i, j] = sum over the kernel window (zero padding): AvgPool2d times the window size."""

    kind = OpKind.SUMPOOL2D


def adaptive_windows(size: int, out: int) -> np.ndarray:
    """torch's adaptive average pooling along one axis as an (out, size) matrix: row i averages
    input rows floor(i·size/out) .. ceil((i+1)·size/out) − 1 (windows may differ and overlap,
    and repeat an input row when out > size)."""
    matrix = np.zeros((out, size))
    for i in range(out):
        start, stop = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


@dataclass(frozen=True, eq=False)
class AdaptiveAvgPool2d(Op):
    """y[c] = A_h · x[c] · A_wᵀ with ``adaptive_windows`` matrices: torch's AdaptiveAvgPool2d
    where its windows are unequal (equal windows lower to AvgPool2d). Linear, separable."""

    kind = OpKind.ADAPTIVE_AVGPOOL2D
    output_size: tuple[int, int] = (1, 1)

    def __post_init__(self):
        object.__setattr__(self, "output_size", _pair(self.output_size))

    def infer_shape(self, inputs):
        (shape,) = inputs
        if len(shape) != 3:
            raise ShapeError(f"AdaptiveAvgPool2d expects (C, H, W), got {shape}")
        return (shape[0],) + self.output_size

    def matrices(self, in_shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        return (adaptive_windows(in_shape[1], self.output_size[0]),
                adaptive_windows(in_shape[2], self.output_size[1]))


@dataclass(frozen=True, eq=False)
class MaxPool2d(Op):
    """y[c, i, j] = max over the kernel window (padding never wins: torch's −inf padding).

    Float ANN only: no spiking mapping exists on Loihi 2 here. ``passes.maxpool`` replaces it
    (``--maxpool avg``: an AvgPool2d of the same window) or refuses the model, naming the flag.
    """

    kind = OpKind.MAXPOOL2D
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    def __post_init__(self):
        for name in ("kernel", "stride", "padding", "dilation"):
            object.__setattr__(self, name, _pair(getattr(self, name)))

    def infer_shape(self, inputs):
        (shape,) = inputs
        if len(shape) != 3:
            raise ShapeError(f"MaxPool2d expects (C, H, W), got {shape}")
        h, w = conv_output_hw(shape[1:], self.kernel, self.stride, self.padding, self.dilation)
        if h <= 0 or w <= 0:
            raise ShapeError(f"MaxPool2d output would be empty for input {shape}")
        return (shape[0], h, w)


@dataclass(frozen=True, eq=False)
class Flatten(Op):
    """y = x reshaped to one dimension, C-order (torch.flatten(x, 1) with the batch kept)."""

    kind = OpKind.FLATTEN

    def infer_shape(self, inputs):
        (shape,) = inputs
        return (math.prod(shape),)


@dataclass(frozen=True, eq=False)
class Add(Op):
    """y = x0 + x1 + … (residual add, two or more inputs of one shape)."""

    kind = OpKind.ADD
    arity = -1

    def infer_shape(self, inputs):
        if len(inputs) < 2:
            raise ShapeError(f"Add needs at least two inputs, got {len(inputs)}")
        if len(set(inputs)) != 1:
            a, b = sorted(set(inputs))[:2]
            raise ShapeError(f"Add needs equal shapes, got {a} and {b}")
        return inputs[0]


@dataclass(frozen=True, eq=False)
class Concat(Op):
    """y = the inputs stacked along the first (channel) axis, in input order; the other dims
    must agree. On the chip it is wiring only: each consumer synapse reads its slice."""

    kind = OpKind.CONCAT
    arity = -1

    def infer_shape(self, inputs):
        if len(inputs) < 1:
            raise ShapeError("Concat needs at least one input")
        rest = {tuple(s[1:]) for s in inputs}
        if any(len(s) == 0 for s in inputs) or len(rest) != 1:
            raise ShapeError(f"Concat along channels needs equal other dims, got {inputs}")
        return (sum(s[0] for s in inputs),) + inputs[0][1:]


def _same_shapes(kind: str, inputs: list[Shape]) -> Shape:
    if not inputs:
        raise ShapeError(f"{kind} needs at least one input")
    if len(set(inputs)) != 1:
        raise ShapeError(f"{kind} inputs disagree in shape: {sorted(set(inputs))}")
    return inputs[0]


@dataclass(frozen=True, eq=False)
class IF(Op):
    """Integrate-and-fire neuron, float.

    x[t] is the sum of all inputs (several synaptic inputs onto one neuron = membrane-add).
    v[t] = v[t−1] + x[t];  s[t] = v[t] > threshold;  then reset:
    zero: v[t] = 0 where s[t];  subtract: v[t] −= threshold where s[t].  Output s[t] ∈ {0, 1}.
    signed (``Reset.SIGNED``): subtract, and also s[t] = −1, v[t] += threshold where v[t] ≤ 0
    and the neuron's spikes so far sum to more than 0; output s[t] ∈ {−1, 0, 1}.
    v[0] = v_init. ``threshold`` and ``v_init`` broadcast to the neuron shape.
    """

    kind = OpKind.IF
    arity = -1
    neuron = True
    threshold: np.ndarray = None
    reset: Reset = Reset.SUBTRACT
    v_init: np.ndarray = None

    def __post_init__(self):
        object.__setattr__(self, "threshold", frozen_array(self.threshold))
        object.__setattr__(self, "v_init", frozen_array(0.0 if self.v_init is None else self.v_init))
        object.__setattr__(self, "reset", Reset(self.reset))

    def infer_shape(self, inputs):
        return _same_shapes("IF", inputs)

    def check(self):
        problems = _finite("threshold", self.threshold) + _finite("v_init", self.v_init)
        if np.any(self.threshold <= 0):
            problems.append("threshold must be positive")
        return problems


@dataclass(frozen=True, eq=False)
class LIF(Op):
    """Current-based leaky integrate-and-fire neuron, float (x: the sum of its inputs).

    i[t] = alpha·i[t−1] + x[t];  v[t] = beta·v[t−1] + i[t];  s[t] = v[t] > threshold;
    then reset as IF (zero or subtract). alpha = 0 is a plain LIF; alpha = 0, beta = 1 is IF.
    Parameters broadcast to the neuron shape.
    """

    kind = OpKind.LIF
    arity = -1
    neuron = True
    threshold: np.ndarray = None
    alpha: np.ndarray = None
    beta: np.ndarray = None
    reset: Reset = Reset.ZERO
    v_init: np.ndarray = None

    def __post_init__(self):
        object.__setattr__(self, "threshold", frozen_array(self.threshold))
        object.__setattr__(self, "alpha", frozen_array(0.0 if self.alpha is None else self.alpha))
        object.__setattr__(self, "beta", frozen_array(1.0 if self.beta is None else self.beta))
        object.__setattr__(self, "v_init", frozen_array(0.0 if self.v_init is None else self.v_init))
        object.__setattr__(self, "reset", Reset(self.reset))

    def infer_shape(self, inputs):
        return _same_shapes("LIF", inputs)

    def check(self):
        problems = []
        for name in ("threshold", "alpha", "beta", "v_init"):
            problems += _finite(name, getattr(self, name))
        if np.any(self.threshold <= 0):
            problems.append("threshold must be positive")
        for name in ("alpha", "beta"):
            if np.any(getattr(self, name) < 0) or np.any(getattr(self, name) > 1):
                problems.append(f"{name} must lie in [0, 1]")
        return problems


@dataclass(frozen=True, eq=False)
class Integrator(Op):
    """Non-spiking readout: v[t] = v[t−1] + x[t] (x: the sum of its inputs), v[0] = v_init.
    Its output is v (NIR's I node)."""

    kind = OpKind.INTEGRATOR
    arity = -1
    neuron = True
    v_init: np.ndarray = None

    def __post_init__(self):
        object.__setattr__(self, "v_init", frozen_array(0.0 if self.v_init is None else self.v_init))

    def infer_shape(self, inputs):
        return _same_shapes("Integrator", inputs)


# ---------------------------------------------------------------------------------------------
# Fixed-point ops: integers as the chip holds them (see shared DESIGN §2).


def _int_array(value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size and arr.dtype.kind not in "iub" and not np.all(arr == np.round(arr)):
        raise ValueError("fixed-point parameters must hold integers")
    return frozen_array(arr, dtype=np.int64)


# Loihi's synaptic weight exponent: a signed 4-bit field, −8 .. 7 (Lava's Dense and Conv
# ``weight_exp``; the Loihi 1 paper's weight exponent, Davies et al. 2018)
MAX_WEIGHT_EXP = 7


def effective_weight(op) -> np.ndarray:
    """A FixedDense's or FixedConv2d's weights times 2**weight_exp, in float64 (what one spike
    adds, before a right shift's floor of the sum)."""
    return np.asarray(op.weight, dtype=np.float64) * 2.0 ** int(op.weight_exp)


@dataclass(frozen=True, eq=False)
class FixedDense(Op):
    """a = (W · s) << weight_exp (>> when negative); integer W of shape (out, in), spikes s ∈ {0, 1}.

    Between neurons it sends at step t what it accumulated at step t−1 (Lava's Dense).
    """

    kind = OpKind.FIXED_DENSE
    synaptic = True
    fixed = True
    weight: np.ndarray = None
    weight_format: IntFormat = None
    weight_exp: int = 0

    def __post_init__(self):
        object.__setattr__(self, "weight", _int_array(self.weight))
        object.__setattr__(self, "weight_exp", int(self.weight_exp))

    def infer_shape(self, inputs):
        return Dense.infer_shape(self, inputs)

    def check(self):
        if not self.weight_format.contains(self.weight):
            return [f"weights outside {self.weight_format}"]
        if not -MAX_WEIGHT_EXP - 1 <= self.weight_exp <= MAX_WEIGHT_EXP:
            return [f"weight_exp {self.weight_exp} outside {-MAX_WEIGHT_EXP - 1}..{MAX_WEIGHT_EXP}"]
        return []


@dataclass(frozen=True, eq=False)
class FixedConv2d(Op):
    """a = wrap((W << weight_exp) ⋆ s) with torch's cross-correlation layout (out, in/groups, kH,
    kW), integer W (the 8-bit mantissas) and a non-negative shared exponent.

    ``output_format`` is the wrap-around width of the result (Lava's conv: signed 24 bits).
    One step of delay, like FixedDense. Lava's Conv model has no exponent (its ``weight_exp`` Var
    is unused), so the Lava backend hands it the effective weights W << weight_exp; a left shift
    is exact, so that equals shifting the sum.
    """

    kind = OpKind.FIXED_CONV2D
    synaptic = True
    fixed = True
    weight: np.ndarray = None
    weight_format: IntFormat = None
    output_format: IntFormat = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    weight_exp: int = 0

    def __post_init__(self):
        object.__setattr__(self, "weight", _int_array(self.weight))
        object.__setattr__(self, "weight_exp", int(self.weight_exp))
        for name in ("stride", "padding", "dilation"):
            object.__setattr__(self, name, _pair(getattr(self, name)))

    @property
    def bias(self):
        return None

    def infer_shape(self, inputs):
        return Conv2d.infer_shape(self, inputs)

    def check(self):
        if not self.weight_format.contains(self.weight):
            return [f"weights outside {self.weight_format}"]
        if not 0 <= self.weight_exp <= MAX_WEIGHT_EXP:
            return [f"weight_exp {self.weight_exp} outside 0..{MAX_WEIGHT_EXP} (a convolution's exponent "
                    "is a left shift)"]
        return []


@dataclass(frozen=True, eq=False)
class BiasEncoder(Op):
    """Host-side input encoding: the float x it receives (once per sample, e.g. W·x + b of the
    first layer computed on the host) becomes a per-neuron bias of the neurons it feeds:
    ``mant << exp ≈ x · scale`` in the format ``bias_format``; constant every step.
    """

    kind = OpKind.BIAS_ENCODER
    scale: float = 1.0
    bias_format: MantExpFormat = None

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(mant, exp, saturated count) for a float64 array x; the one place input is rounded."""
        return self.bias_format.encode(np.asarray(x, dtype=np.float64) * self.scale)


@dataclass(frozen=True, eq=False)
class LoihiNeuron(Op):
    """Loihi 2 CUBA LIF neuron in integers (Lava's PyLifModelBitAcc), with a reset mode.

    u[t] = sign(u·(4096 − (du+1)))·(|u·(4096 − (du+1))| >> 12) + (a_in << 6), then one
           correction: u > 2**23 → u − 2**24, u ≤ −2**23 → u + 2**24 (Lava's; not a modulo)
    v[t] = sign(v·(4096 − dv))·(|v·(4096 − dv)| >> 12) + u[t] + (bias_mant << bias_exp),
           clipped to ±(2**23 − 1)    (plus the BiasEncoder's bias when one feeds the neuron)
    s[t] = v[t] > vth << 6;   zero: v = 0 where s;   subtract: v −= vth << 6 where s;
    signed: subtract, and s[t] = −1, v += vth << 6 where v ≤ 0 and n > 0 (n: the sum of the
    neuron's spikes so far; ``Reset.SIGNED``).
    du = 4095, dv = 0 is an IF neuron. A readout neuron has vth at its maximum and is read at the
    end; it still fires if v reaches (vth_max << 6, 2**23 − 1], which counts as a saturation. ``v_scale`` says how many integer units of v make one unit of the float model's v.
    Arrays have the full neuron shape.
    """

    kind = OpKind.LOIHI_NEURON
    arity = -1  # any number of synaptic inputs (membrane-add) and at most one BiasEncoder
    neuron = True
    fixed = True
    vth: np.ndarray = None
    bias_mant: np.ndarray = None
    bias_exp: np.ndarray = None
    du: int = 4095
    dv: int = 0
    reset: Reset = Reset.SUBTRACT
    v_init: np.ndarray = None
    readout: bool = False
    v_scale: float = 1.0
    vth_format: IntFormat = None
    bias_format: MantExpFormat = None
    decay_format: IntFormat = None

    def __post_init__(self):
        for name in ("vth", "bias_mant", "bias_exp"):
            object.__setattr__(self, name, _int_array(getattr(self, name)))
        v_init = np.zeros(self.vth.shape) if self.v_init is None else self.v_init
        object.__setattr__(self, "v_init", _int_array(v_init))
        object.__setattr__(self, "reset", Reset(self.reset))

    def infer_shape(self, inputs):
        # no input: a clock (passes.latency), running on its v_init and bias alone
        shape = _same_shapes("LoihiNeuron", inputs) if inputs else tuple(self.vth.shape)
        for name in ("vth", "bias_mant", "bias_exp", "v_init"):
            if getattr(self, name).shape != shape:
                raise ShapeError(f"{name} has shape {getattr(self, name).shape}, neuron shape is {shape}")
        return shape

    def check(self):
        problems = []
        if not self.vth_format.contains(self.vth):
            problems.append(f"vth outside {self.vth_format}")
        if not self.bias_format.contains(self.bias_mant, self.bias_exp):
            problems.append(f"bias outside {self.bias_format}")
        for name in ("du", "dv"):
            if not self.decay_format.contains(np.array(getattr(self, name))):
                problems.append(f"{name}={getattr(self, name)} outside {self.decay_format}")
        return problems
