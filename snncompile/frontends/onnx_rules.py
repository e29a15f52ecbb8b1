"""The ONNX frontend's lowering rules: one small function per ONNX op type, in the ``LOWERINGS`` table
the walk (``frontends.onnx``) looks ops up in; each returns the value of output 0 or raises
``Reject(hint)``. Also the ops never folded on constants and hints for unsupported ops."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import onnx

from snncompile.frontends.lowering import Reject
from snncompile.frontends.onnx_values import BROKEN, FLOAT_TYPES, Act, Const, Node, Sized
from snncompile.ir import ops as ir


def _act(value, what: str = "input") -> Act:
    if isinstance(value, Act):
        return value
    raise Reject(f"its {what} must be computed from the model's input, not a constant")


def _const(value, what: str, optional: bool = False) -> np.ndarray | None:
    if isinstance(value, Const):
        return value.array
    if value is None and optional:
        return None
    if isinstance(value, Sized):
        raise Reject(f"its {what} depends on the batch size")
    if isinstance(value, Act):
        raise Reject(f"its {what} must be an initializer or constant, not computed from the input")
    raise Reject(f"its {what} is missing")


def _image(x: Act) -> tuple[int, int, int]:
    if len(x.dims) != 3:
        raise Reject(f"expects an input of shape (C, H, W) per sample, got {x.dims}")
    return x.dims


def _vector(x: Act) -> int:
    if len(x.dims) != 1:
        raise Reject(f"expects an input of shape (features,) per sample, got {x.dims}")
    return x.dims[0]


def _ints(attrs: dict, name: str, default: list[int]) -> list[int]:
    value = attrs.get(name)
    return [int(v) for v in value] if value else list(default)


def _window_count(size: int, begin: int, end: int, kernel: int, stride: int, dilation: int,
                  ceil: bool = False) -> int:
    span = size + begin + end - dilation * (kernel - 1) - 1
    count = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (count - 1) * stride >= size + begin:
        count -= 1  # the last window would start in the end padding; ONNX and torch drop it
    return count


def _auto_pads(attrs: dict, hw, kernel, stride, dilation) -> tuple[list[int], list[int]]:
    """(begins, ends) per spatial axis from ``auto_pad`` and ``pads``."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [0, 0], [0, 0]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(hw, kernel, stride, dilation):
            total = max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        return begins, ends
    if auto_pad != "NOTSET":
        raise Reject(f"auto_pad={auto_pad} is not supported")
    pads = _ints(attrs, "pads", [0, 0, 0, 0])
    return pads[:2], pads[2:]


def _symmetric_padding(begins, ends, hw, kernel, stride, dilation) -> tuple[int, int]:
    """IR padding equal to ONNX's (begin, end) pads: the windows start at the same places, so
    asymmetric pads are exact when the (begin, begin) padding gives as many windows."""
    padding = []
    for size, b, e, k, s, d in zip(hw, begins, ends, kernel, stride, dilation):
        if b != e and _window_count(size, b, e, k, s, d) != _window_count(size, b, b, k, s, d):
            raise Reject(
                f"asymmetric pads (begin {list(begins)}, end {list(ends)}) change the output "
                "shape; use symmetric padding"
            )
        padding.append(b)
    return tuple(padding)


def _bias_vector(const: np.ndarray, dims: tuple[int, ...], per_channel: bool) -> np.ndarray:
    """A constant added to activations of shape (N, *dims) as one bias per output channel."""
    full_shape = (1,) + tuple(dims)
    try:
        if np.broadcast_shapes(const.shape, full_shape) != full_shape:
            raise ValueError
    except ValueError:
        hint = f"a constant of shape {const.shape} does not broadcast to {full_shape}"
        raise Reject(hint) from None
    full = np.broadcast_to(const.astype(np.float64), full_shape)[0]
    if not per_channel:
        return full.reshape(-1)
    rows = full.reshape(dims[0], -1)
    if not np.all(rows == rows[:, :1]):
        raise Reject("the constant varies within a channel; only a per-channel bias folds")
    return rows[:, 0].copy()


def _reshape_to(low, node: Node, x: Act, out: tuple[int, ...], what: str) -> Act:
    """A reshape of ``x`` to non-batch dims ``out``: nothing, a Flatten, or a Problem."""
    if out == x.dims:
        return x
    if out == (math.prod(x.dims),):
        return low.emit(node, ir.Flatten(), [x])
    raise Reject(
        f"{what} {x.dims} -> {out} per sample: only flattening every non-batch dim "
        "(x.flatten(1), x.view(x.size(0), -1)) is supported"
    )


def _reshape_result(in_shape: tuple[int, ...], target: np.ndarray,
                    allowzero: bool) -> tuple[int, ...]:
    """ONNX Reshape's output shape: 0 copies the input dim (unless allowzero), -1 is inferred."""
    shape = [int(t) for t in np.asarray(target).reshape(-1)]
    if not allowzero:
        shape = [in_shape[i] if t == 0 and i < len(in_shape) else t for i, t in enumerate(shape)]
    total = math.prod(in_shape)
    if shape.count(-1) > 1 or any(t < -1 for t in shape):
        raise Reject(f"invalid reshape target {shape}")
    if -1 in shape:
        known = math.prod(t for t in shape if t != -1)
        if known == 0 or total % known:
            raise Reject(f"cannot reshape {in_shape} to {shape}")
        shape[shape.index(-1)] = total // known
    if math.prod(shape) != total:
        raise Reject(f"cannot reshape {in_shape} to {shape}")
    return tuple(shape)


def _conv(low, n: Node) -> Act:
    x = _act(n.arg(0))
    weight = _const(n.arg(1), "weight")
    if weight.ndim != 4:
        raise Reject(f"only 2-D convolution is supported (weight of rank {weight.ndim})")
    _c, *hw = _image(x)
    kernel = tuple(weight.shape[2:])
    if "kernel_shape" in n.attrs and tuple(n.attrs["kernel_shape"]) != kernel:
        raise Reject(f"kernel_shape {n.attrs['kernel_shape']} differs from the weight's {kernel}")
    stride = _ints(n.attrs, "strides", [1, 1])
    dilation = _ints(n.attrs, "dilations", [1, 1])
    begins, ends = _auto_pads(n.attrs, hw, kernel, stride, dilation)
    op = ir.Conv2d(
        weight=weight,
        bias=_const(n.arg(2), "bias", optional=True),
        stride=tuple(stride),
        padding=_symmetric_padding(begins, ends, hw, kernel, stride, dilation),
        dilation=tuple(dilation),
        groups=int(n.attrs.get("group", 1)),
    )
    return low.emit(n, op, [x])


def _gemm(low, n: Node) -> Act:
    x = _act(n.arg(0))
    if n.attrs.get("transA", 0):
        raise Reject("transA=1 transposes the activation; only transA=0 is supported")
    b = _const(n.arg(1), "weight (B)")
    weight = b.T if not n.attrs.get("transB", 0) else b  # IR layout: (out, in)
    weight = float(n.attrs.get("alpha", 1.0)) * weight.astype(np.float64)
    c = _const(n.arg(2), "bias (C)", optional=True)
    bias = None
    if c is not None:
        bias = float(n.attrs.get("beta", 1.0)) * _bias_vector(c, (weight.shape[0],), False)
    return _dense(low, n, x, weight, bias)


def _matmul(low, n: Node) -> Act:
    x = _act(n.arg(0), "left operand")
    b = _const(n.arg(1), "right operand (the weight)")
    if b.ndim != 2:
        raise Reject(f"only a product with a 2-D constant weight is supported (rank {b.ndim})")
    return _dense(low, n, x, b.T, None)


def _dense(low, n: Node, x: Act, weight: np.ndarray, bias) -> Act:
    features = _vector(x)
    if weight.shape[1] != features:
        raise Reject(f"weight of shape {weight.shape} (out, in) for {features} input features")
    return low.emit(n, ir.Dense(weight=weight, bias=bias), [x])


def _add(low, n: Node, sign: float = 1.0) -> Act:
    a, b = n.arg(0), n.arg(1)
    if isinstance(a, Act) and isinstance(b, Act):
        if sign < 0:
            raise Reject("subtracting activations has no spiking mapping; only a residual add")
        if a.dims != b.dims:
            raise Reject(f"add of shapes {a.dims} and {b.dims}: broadcasting is not supported")
        if a.key == b.key != BROKEN:
            raise Reject("x + x: the IR cannot take one input twice; double the layer's weights")
        return low.emit(n, ir.Add(), [a, b])
    if isinstance(b, Act):
        if sign < 0:
            raise Reject("constant minus activation has no spiking mapping")
        a, b = b, a
    return _fold_constant(low, a, _const(b, "second operand"), sign)


def _fold_constant(low, x: Act, const: np.ndarray, sign: float) -> Act:
    """Fold ``x + sign·const`` into the bias of the Dense or Conv2d that computes x."""
    if not np.any(const) or x.key == BROKEN:  # BROKEN: from a rejected node, reported already
        _bias_vector(const, x.dims, False)  # the constant must still broadcast to x's shape
        return x
    entry = low.entries[x.key]
    if not isinstance(entry.op, (ir.Dense, ir.Conv2d)):
        raise Reject(
            f"adding a constant to the output of {entry.op.kind.value} has no spiking mapping; "
            "only a bias right after a Gemm, MatMul or Conv folds into that layer"
        )
    if not low.sole_user(x.key):
        raise Reject("the layer before the add has other users; its bias cannot absorb it")
    vector = _bias_vector(const, x.dims, isinstance(entry.op, ir.Conv2d))
    bias = sign * vector if entry.op.bias is None else entry.op.bias + sign * vector
    entry.op = dataclasses.replace(entry.op, bias=bias)
    return x


def _sub(low, n: Node) -> Act:
    return _add(low, n, sign=-1.0)


def _relu(low, n: Node) -> Act:
    return low.emit(n, ir.ReLU(), [_act(n.arg(0))])


def _clip(low, n: Node) -> Act:
    """Clip(0) is Relu; Clip(0, a) with a constant a > 0 a clipped ReLU (ReLU6: a = 6). Opset < 11
    carries min and max as attributes."""
    low_bound = _const(n.arg(1), "min", optional=True) if n.arg(1) is not None else n.attrs.get("min")
    high = _const(n.arg(2), "max", optional=True) if n.arg(2) is not None else n.attrs.get("max")
    if low_bound is None or np.any(np.asarray(low_bound) != 0):
        raise Reject("only Clip(min=0), Relu, or Clip(0, a), a clipped ReLU, is supported")
    if high is not None and (np.size(high) != 1 or not float(np.asarray(high).reshape(-1)[0]) > 0):
        raise Reject("Clip(0, a) needs one constant a > 0")
    upper = None if high is None else float(np.asarray(high).reshape(-1)[0])
    return low.emit(n, ir.ReLU(upper=upper), [_act(n.arg(0))])


def _max_pool(low, n: Node) -> Act:
    """MaxPool -> MaxPool2d (passes.maxpool refuses it or, with --maxpool avg, averages)."""
    x = _act(n.arg(0))
    _c, *hw = _image(x)
    if len(n.proto.output) > 1 and n.proto.output[1]:
        raise Reject("uses MaxPool's indices output")
    kernel = _ints(n.attrs, "kernel_shape", [])
    if len(kernel) != 2:
        raise Reject(f"only 2-D pooling is supported (kernel_shape {kernel})")
    stride = _ints(n.attrs, "strides", [1, 1])
    dilation = _ints(n.attrs, "dilations", [1, 1])
    begins, ends = _auto_pads(n.attrs, hw, kernel, stride, dilation)
    if n.attrs.get("ceil_mode", 0):
        axes = list(zip(hw, begins, ends, kernel, stride))
        if [_window_count(*a, d) for a, d in zip(axes, dilation)] != [
                _window_count(*a, d, ceil=True) for a, d in zip(axes, dilation)]:
            raise Reject("ceil_mode=1 adds partial windows; use ceil_mode=0")
    padding = _symmetric_padding(begins, ends, hw, kernel, stride, dilation)
    op = ir.MaxPool2d(kernel=tuple(kernel), stride=tuple(stride), padding=padding, dilation=tuple(dilation))
    return low.emit(n, op, [x])


def _concat(low, n: Node) -> Act:
    xs = [_act(a, "inputs") for a in n.args]
    axis = int(n.attrs.get("axis", 1))
    rank = len(xs[0].dims) + 1
    if axis % rank != 1:
        raise Reject(f"Concat along axis {axis}; only along channels (axis=1) is supported")
    if len({x.key for x in xs}) != len(xs):
        raise Reject("concatenates one activation twice; the IR takes each input once")
    return low.emit(n, ir.Concat(), xs)


def _batch_norm(low, n: Node) -> Act:
    x = _act(n.arg(0))
    if n.attrs.get("training_mode", 0):
        raise Reject("BatchNormalization in training mode; export after model.eval()")
    if not x.dims:
        raise Reject("BatchNormalization needs a channel dim")
    op = ir.BatchNorm(
        gamma=_const(n.arg(1), "scale"),
        beta=_const(n.arg(2), "B"),
        mean=_const(n.arg(3), "mean"),
        var=_const(n.arg(4), "var"),
        eps=float(n.attrs.get("epsilon", 1e-5)),
    )
    channels = x.dims[0]
    for name in ("gamma", "beta", "mean", "var"):
        if getattr(op, name).shape != (channels,):
            raise Reject(f"{name} of shape {getattr(op, name).shape} for {channels} channels")
    return low.emit(n, op, [x])


def _average_pool(low, n: Node) -> Act:
    x = _act(n.arg(0))
    _c, *hw = _image(x)
    kernel = _ints(n.attrs, "kernel_shape", [])
    if len(kernel) != 2:
        raise Reject(f"only 2-D pooling is supported (kernel_shape {kernel})")
    stride = _ints(n.attrs, "strides", [1, 1])
    if _ints(n.attrs, "dilations", [1, 1]) != [1, 1]:
        raise Reject("dilated pooling is not supported")
    begins, ends = _auto_pads(n.attrs, hw, kernel, stride, [1, 1])
    reasons = []
    # each option is refused only where it changes the result
    if n.attrs.get("ceil_mode", 0):
        axes = list(zip(hw, begins, ends, kernel, stride))
        floor = [_window_count(*axis, 1) for axis in axes]
        ceil = [_window_count(*axis, 1, ceil=True) for axis in axes]
        if floor != ceil:
            reasons.append("ceil_mode=1 adds partial windows; use ceil_mode=0")
    if not n.attrs.get("count_include_pad", 0) and any(begins + ends):
        reasons.append("count_include_pad=0 with padding; use count_include_pad=1")
    if reasons:
        raise Reject("; ".join(reasons))
    padding = _symmetric_padding(begins, ends, hw, kernel, stride, [1, 1])
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        # torch's avg_pool2d, which evaluates the IR op, refuses such windows of padding only
        raise Reject(f"pads {padding} exceed half the kernel {tuple(kernel)}; pad less")
    op = ir.AvgPool2d(kernel=tuple(kernel), stride=tuple(stride), padding=padding)
    return low.emit(n, op, [x])


def _global_average_pool(low, n: Node) -> Act:
    x = _act(n.arg(0))
    _c, h, w = _image(x)
    return low.emit(n, ir.AvgPool2d(kernel=(h, w), stride=(h, w)), [x])


def _reduce_mean(low, n: Node) -> Act:
    x = _act(n.arg(0))
    axes_value = n.arg(1)
    axes = _const(axes_value, "axes") if axes_value is not None else n.attrs.get("axes")
    rank = len(x.dims) + 1
    if axes is None or len(axes) == 0:
        if n.attrs.get("noop_with_empty_axes", 0):
            return x
        raise Reject("ReduceMean over every axis, the batch included, is not supported")
    if {int(a) % rank for a in np.asarray(axes).reshape(-1)} != {2, 3} or rank != 4:
        raise Reject("only the mean over H and W (global average pooling) is supported")
    _c, h, w = x.dims
    pooled = low.emit(n, ir.AvgPool2d(kernel=(h, w), stride=(h, w)), [x])
    if n.attrs.get("keepdims", 1):
        return pooled
    return low.emit(n, ir.Flatten(), [pooled], suffix="_flatten")


def _flatten(low, n: Node) -> Act:
    x = _act(n.arg(0))
    axis = int(n.attrs.get("axis", 1))
    if axis % (len(x.dims) + 1) != 1:
        raise Reject(f"Flatten(axis={axis}); only axis=1 (keeping the batch dim) is supported")
    return _reshape_to(low, n, x, (math.prod(x.dims),), "flatten")


def _reshape(low, n: Node) -> Act:
    x = _act(n.arg(0), "data")
    target = n.arg(1)
    if isinstance(target, Sized):
        targets = target.arrays
    else:
        targets = (_const(target, "shape"),) * len(low.trials)
    allowzero = bool(n.attrs.get("allowzero", 0))
    results = [
        _reshape_result((batch,) + x.dims, shape, allowzero)
        for batch, shape in zip(low.trials, targets)
    ]
    if any(out[:1] != (batch,) for batch, out in zip(low.trials, results)):
        shown = ", ".join(f"batch {b}: {out}" for b, out in zip(low.trials, results))
        raise Reject(f"the reshape does not keep the batch dim first ({shown})")
    if len({out[1:] for out in results}) != 1:
        raise Reject(f"the reshape's per-sample shape depends on the batch size: {results}")
    return _reshape_to(low, n, x, results[0][1:], "reshape")


def _squeeze(low, n: Node) -> Act:
    x = _act(n.arg(0))
    axes_value = n.arg(1)
    axes = _const(axes_value, "axes") if axes_value is not None else n.attrs.get("axes")
    rank = len(x.dims) + 1
    if axes is None:
        if low.trials == (1,):
            raise Reject("Squeeze without axes would drop the batch dim of size 1; give axes")
        drop = {i + 1 for i, d in enumerate(x.dims) if d == 1}
    else:
        drop = {int(a) % rank for a in np.asarray(axes).reshape(-1)}
    if 0 in drop:
        raise Reject("squeezing the batch dim is not supported")
    if any(x.dims[a - 1] != 1 for a in drop):
        raise Reject(f"squeeze of axes {sorted(drop)} that are not of size 1 in {x.dims}")
    out = tuple(d for i, d in enumerate(x.dims) if i + 1 not in drop)
    return _reshape_to(low, n, x, out, "squeeze")


def _shape(low, n: Node) -> Const | Sized:
    x = _act(n.arg(0), "data")
    start, end = n.attrs.get("start", 0), n.attrs.get("end")
    arrays = tuple(np.array(((batch,) + x.dims)[start:end], dtype=np.int64) for batch in low.trials)
    if all(np.array_equal(a, arrays[0]) for a in arrays):
        return Const(arrays[0])
    return Sized(arrays)


def _dropout(low, n: Node) -> Act:
    training = _const(n.arg(2), "training_mode", optional=True)
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        raise Reject("Dropout in training mode; export after model.eval()")
    return _act(n.arg(0))


def _identity(low, n: Node) -> Act:
    return _act(n.arg(0))


def _cast(low, n: Node) -> Act:
    if n.attrs.get("to") not in FLOAT_TYPES:
        name = onnx.TensorProto.DataType.Name(n.attrs.get("to", 0))
        raise Reject(f"conversion of an activation to {name}; keep the model in float")
    return _act(n.arg(0))


def _cast_like(low, n: Node) -> Act | Const:
    """CastLike(value, like): activations are float, so only a constant's dtype can change.

    The dynamo exporter without its optimizer writes CastLike(0.0, activation) for the zero
    bias of a bias-free Conv; the constant becomes float64, the IR's precision.
    """
    value, like = n.arg(0), n.arg(1)
    if isinstance(like, Const) and not np.issubdtype(like.array.dtype, np.floating):
        raise Reject(f"conversion to {like.array.dtype}; keep the model in float")
    if isinstance(value, Const):
        return Const(value.array.astype(np.float64))
    return _act(value)


# a rule takes the walk (frontends.onnx._Lowering) and the node
LOWERINGS: dict[str, Callable[[object, Node], object]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Sub": _sub,
    "Relu": _relu,
    "Clip": _clip,
    "MaxPool": _max_pool,
    "Concat": _concat,
    "BatchNormalization": _batch_norm,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_average_pool,
    "ReduceMean": _reduce_mean,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Shape": _shape,
    "Dropout": _dropout,
    "Identity": _identity,
    "Cast": _cast,
    "CastLike": _cast_like,
}

# Never evaluated ahead of time, even on constant inputs: their values differ run to run.
NOT_FOLDED = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
    "Multinomial",
})

HINTS: dict[str, str] = {
    **dict.fromkeys(
        ("GlobalMaxPool", "MaxRoiPool", "MaxUnpool", "LpPool", "GlobalLpPool"),
        "use AveragePool (nn.AvgPool2d) instead of max pooling",
    ),
    **dict.fromkeys(
        ("Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "HardSigmoid",
         "HardSwish", "Softplus", "Softsign", "Mish", "PRelu", "ThresholdedRelu", "Swish"),
        "use Relu",
    ),
    **dict.fromkeys(
        ("Softmax", "LogSoftmax", "Hardmax"),
        "remove the softmax; the predicted class is the argmax of the logits",
    ),
    "ConvTranspose": "transposed convolution has no Loihi 2 mapping",
    "ConvInteger": "export the float model; snncompile quantizes for Loihi 2 itself",
    **dict.fromkeys(
        ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
         "DynamicQuantizeLinear"),
        "export the float model; snncompile quantizes for Loihi 2 itself",
    ),
    **dict.fromkeys(
        ("LayerNormalization", "GroupNormalization", "InstanceNormalization", "LRN",
         "MeanVarianceNormalization", "RMSNormalization"),
        "use BatchNorm, which folds into the preceding layer",
    ),
    **dict.fromkeys(
        ("Mul", "Div", "Pow", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Max", "Min",
         "Sum", "Mean"),
        "arithmetic on activations has no spiking mapping; only a residual add is supported",
    ),
    **dict.fromkeys(
        ("Split", "Slice", "Gather", "GatherElements", "GatherND", "Tile", "Expand",
         "Transpose", "Unsqueeze", "Pad", "SpaceToDepth", "DepthToSpace"),
        "reshaping and slicing activations are not supported "
        "(flattening, channel Concat and a convolution's own padding are)",
    ),
    **dict.fromkeys(("Resize", "Upsample"), "resizing is not supported"),
    **dict.fromkeys(("LSTM", "GRU", "RNN"), "recurrent layers are not supported"),
    **dict.fromkeys(
        ("ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
         "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "TopK"),
        "only ReduceMean over H and W (global average pooling) is supported",
    ),
    **dict.fromkeys(("If", "Loop", "Scan"), "control flow is not supported"),
}
