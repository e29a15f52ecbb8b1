"""The torch frontend's lowering rules: one small function per aten op family, in the ``LOWERINGS``
table the walk (``frontends.torch``) looks ops up in; each returns the node's value or raises
``Reject(hint)``. Also the ops skipped, the ops folded on constants, and hints for unsupported ops."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from torch import fx

from snncompile.frontends.lowering import Reject
from snncompile.frontends.snn_ops import LOWERINGS as SNN_LOWERINGS
from snncompile.frontends.torch_values import BROKEN, Act, Items, _act, _const, _dims, _np, _pair, _shape_of, _static
from snncompile.ir import ops as ir


def _conv(low, node: fx.Node, a: dict) -> Act:
    x = _act(a["input"])
    weight = _const(a["weight"], "weight")
    if a.get("transposed"):
        raise Reject("transposed convolution has no Loihi mapping")
    if weight.dim() != 4:
        raise Reject("only 2-D convolution (Conv2d) is supported")
    _static(x, 3)
    dilation = _pair(a["dilation"])
    op = ir.Conv2d(
        weight=_np(weight),
        bias=_np(_const(a["bias"], "bias", optional=True)),
        stride=_pair(a["stride"]),
        padding=_conv_padding(a["padding"], weight.shape[2:], dilation),
        dilation=dilation,
        groups=int(a["groups"]),
    )
    return low.emit(node, op, [x])


def _conv_padding(padding, kernel, dilation) -> tuple[int, int]:
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(t % 2 for t in totals):
            raise Reject("padding='same' with an even kernel pads unevenly; pad explicitly")
        return (totals[0] // 2, totals[1] // 2)
    return _pair(padding)


def _dense(low, node: fx.Node, x: Act, weight, bias) -> Act:
    (features,) = _static(x, 1)
    if weight.dim() != 2 or weight.shape[1] != features:
        raise Reject(f"weight of shape {tuple(weight.shape)} for {features} input features")
    if bias is not None:
        if bias.numel() != weight.shape[0]:
            raise Reject(f"bias of shape {tuple(bias.shape)} for {weight.shape[0]} outputs")
        bias = bias.reshape(-1)
    return low.emit(node, ir.Dense(weight=_np(weight), bias=_np(bias)), [x])


def _linear(low, node, a):
    weight = _const(a["weight"], "weight")
    return _dense(low, node, _act(a["input"]), weight, _const(a["bias"], "bias", True))


def _addmm(low, node, a):
    weight = a["alpha"] * _const(a["mat2"], "weight").t()
    bias = a["beta"] * _const(a["self"], "bias")
    return _dense(low, node, _act(a["mat1"]), weight, bias)


def _mm(low, node, a):
    other = _const(a.get("mat2", a.get("other")), "weight")
    if other.dim() != 2:
        raise Reject("only a product with a 2-D constant weight is supported")
    return _dense(low, node, _act(a["self"]), other.t(), None)


def _batch_norm(low, node, a):
    x = _act(a["input"])
    mean = _const(a.get("running_mean"), "running mean", optional=True)
    var = _const(a.get("running_var"), "running var", optional=True)
    if mean is None or var is None:
        raise Reject("BatchNorm without running statistics (track_running_stats=False)")
    if a.get("training"):
        raise Reject("BatchNorm in training mode; export after model.eval()")
    channels = mean.shape[0]
    _static(x)
    gamma = _const(a["weight"], "weight", optional=True)
    beta = _const(a["bias"], "bias", optional=True)
    op = ir.BatchNorm(
        mean=_np(mean),
        var=_np(var),
        gamma=np.ones(channels) if gamma is None else _np(gamma),
        beta=np.zeros(channels) if beta is None else _np(beta),
        eps=float(a["eps"]),
    )
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        out = low.emit(node, op, [x], shape=_shape_of(val[0]))
        return Items((out,) + (None,) * (len(val) - 1))
    return low.emit(node, op, [x])


def _relu(low, node, a):
    return low.emit(node, ir.ReLU(), [_act(a["self"])])


def _clamp(low, node, a):
    low_bound, high = a.get("min"), a.get("max")
    if low_bound != 0 or (high is not None and not (isinstance(high, (int, float)) and high > 0)):
        raise Reject("only clamp(min=0) or clamp(0, a) with a constant a > 0 (a clipped ReLU) is supported")
    return low.emit(node, ir.ReLU(upper=None if high is None else float(high)), [_act(a["self"])])


def _hardtanh(low, node, a):
    lo, hi = a.get("min_val", -1.0), a.get("max_val", 1.0)
    if lo != 0 or not hi > 0:
        raise Reject(f"Hardtanh({lo}, {hi}): only Hardtanh(0, a) with a > 0 (a clipped ReLU) is supported")
    return low.emit(node, ir.ReLU(upper=float(hi)), [_act(a["self"])])


def _relu6(low, node, a):
    return low.emit(node, ir.ReLU(upper=6.0), [_act(a["self"])])


def _max_pool2d(low, node, a):
    x = _act(a["self"])
    _channels, *hw = _static(x, 3)
    kernel = _pair(a["kernel_size"])
    stride = _pair(a["stride"]) if a["stride"] else kernel
    padding, dilation = _pair(a["padding"]), _pair(a["dilation"])
    floor_hw = ir.conv_output_hw(hw, kernel, stride, padding, dilation)
    val = node.meta.get("val")
    out_hw = tuple(_shape_of(val[0] if isinstance(val, (tuple, list)) else val)[2:])
    if a.get("ceil_mode") and out_hw != tuple(floor_hw):
        raise Reject("ceil_mode=True adds partial windows; use ceil_mode=False")
    op = ir.MaxPool2d(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    if isinstance(val, (tuple, list)):  # max_pool2d_with_indices: (values, indices)
        out = low.emit(node, op, [x], shape=_shape_of(val[0]))
        return Items((out, None))
    return low.emit(node, op, [x])


def _cat(low, node, a):
    tensors = a["tensors"]
    if not all(isinstance(t, Act) for t in tensors):
        raise Reject("concatenates a constant; only activations can be concatenated")
    dim = int(a.get("dim", 0))
    rank = len(tensors[0].shape)
    if dim % rank != 1:
        raise Reject(f"concatenation along dim {dim}; only along channels (dim=1) is supported")
    if len({t.key for t in tensors}) != len(tensors):
        raise Reject("concatenates one activation twice; the IR takes each input once")
    return low.emit(node, ir.Concat(), list(tensors))


def _avg_pool2d(low, node, a):
    x = _act(a["self"])
    _channels, *hw = _static(x, 3)
    kernel = _pair(a["kernel_size"])
    stride = _pair(a["stride"]) if a["stride"] else kernel
    padding = _pair(a["padding"])
    floor_hw = ir.conv_output_hw(hw, kernel, stride, padding, (1, 1))
    reasons = []
    # each option is refused only where it changes the result
    if a["ceil_mode"] and tuple(_dims(node)[2:]) != tuple(floor_hw):
        reasons.append("ceil_mode=True adds partial windows; use ceil_mode=False")
    if not a["count_include_pad"] and any(padding):
        reasons.append("count_include_pad=False with padding; use count_include_pad=True")
    if a["divisor_override"] not in (None, kernel[0] * kernel[1]):
        reasons.append("divisor_override is not supported")
    if reasons:
        raise Reject("; ".join(reasons))
    return low.emit(node, ir.AvgPool2d(kernel=kernel, stride=stride, padding=padding), [x])


def _adaptive_avg_pool2d(low, node, a):
    x = _act(a["self"])
    _channels, h, w = _static(x, 3)
    oh, ow = _pair(a["output_size"])
    if h % oh or w % ow:  # unequal (or repeating) windows: a separable linear map
        return low.emit(node, ir.AdaptiveAvgPool2d(output_size=(oh, ow)), [x])
    kernel = (h // oh, w // ow)
    return low.emit(node, ir.AvgPool2d(kernel=kernel, stride=kernel), [x])


def _mean(low, node, a):
    x = _act(a["self"])
    channels, h, w = _static(x, 3)
    dims = {int(d) % 4 for d in (a["dim"] or ())}
    if dims != {2, 3}:
        raise Reject("only the mean over H and W (global average pooling) is supported")
    pooled_shape = (x.shape[0], channels, 1, 1)
    pool = ir.AvgPool2d(kernel=(h, w), stride=(h, w))
    if a["keepdim"]:
        return low.emit(node, pool, [x])
    pooled = low.emit(node, pool, [x], shape=pooled_shape)
    return low.emit(node, ir.Flatten(), [pooled], suffix="_flatten")


def _reshape(low, node, a):
    """Any view or reshape: fine when it keeps the shape or flattens all non-batch dims."""
    x = _act(a["self"])
    before, after = x.shape, _dims(node)
    if before is None:
        return Act(BROKEN, after)
    if after == before:
        return x
    dims = _static(x)
    if len(after) == 2 and after[0] == before[0] and after[1] == math.prod(dims):
        return low.emit(node, ir.Flatten(), [x])
    raise Reject(
        f"reshape {tuple(before)} -> {tuple(after)}: only flattening every non-batch dim "
        "(x.flatten(1), x.view(x.size(0), -1)) is supported"
    )


def _add(low, node, a):
    x, y = a["self"], a["other"]
    if a.get("alpha", 1) != 1:
        raise Reject("add with alpha != 1 is not supported")
    if not (isinstance(x, Act) and isinstance(y, Act)):
        raise Reject("adding a constant is not supported; fold it into a layer's bias")
    if x.shape != y.shape:
        raise Reject(f"add of shapes {x.shape} and {y.shape}: broadcasting is not supported")
    if x.key == y.key and x.key != BROKEN:
        raise Reject("x + x: the IR cannot take one input twice; double the layer's weights")
    return low.emit(node, ir.Add(), [x, y])


def _dropout(low, node, a):
    if a.get("train"):
        raise Reject("dropout in training mode; export after model.eval()")
    x = _act(a["input"])
    val = node.meta.get("val")
    return Items((x, None)) if isinstance(val, (tuple, list)) else x


def _identity(low, node, a):
    return _act(a["self"])


def _to_copy(low, node, a):
    x = _act(a["self"])
    val, source = node.meta.get("val"), node.args[0].meta.get("val")
    if val.dtype != source.dtype:
        raise Reject(f"conversion to {val.dtype}; keep the model in float")
    return x


def _getitem(low, node, a):
    container, index = a["self"], a["index"]
    if isinstance(container, Items) and isinstance(index, int):
        item = container.items[index]
        if item is None:
            raise Reject("uses a secondary result (saved statistics, dropout mask)")
        return item
    raise Reject("indexing is not supported")


# a rule takes the walk (frontends.torch._Lowering), the fx node and its arguments by name
LOWERINGS: dict[str, Callable[[object, fx.Node, dict], object]] = {
    "conv2d": _conv,
    "convolution": _conv,
    "linear": _linear,
    "addmm": _addmm,
    "mm": _mm,
    "matmul": _mm,
    "batch_norm": _batch_norm,
    "native_batch_norm": _batch_norm,
    "_native_batch_norm_legit": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm,
    "relu": _relu,
    "relu_": _relu,
    "clamp": _clamp,
    "clamp_min": _clamp,
    "hardtanh": _hardtanh,
    "hardtanh_": _hardtanh,
    "relu6": _relu6,
    "max_pool2d": _max_pool2d,
    "max_pool2d_with_indices": _max_pool2d,
    "cat": _cat,
    "concat": _cat,
    "avg_pool2d": _avg_pool2d,
    "adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "_adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "mean": _mean,
    "add": _add,
    "add_": _add,
    "dropout": _dropout,
    "dropout_": _dropout,
    "feature_dropout": _dropout,
    "alpha_dropout": _dropout,
    "feature_alpha_dropout": _dropout,
    "native_dropout": _dropout,
    "clone": _identity,
    "detach": _identity,
    "detach_": _identity,
    "alias": _identity,
    "lift_fresh_copy": _identity,
    "contiguous": _identity,
    "_to_copy": _to_copy,
    "to": _to_copy,
    **dict.fromkeys(
        ("flatten", "view", "reshape", "_unsafe_view", "view_copy", "squeeze", "unsqueeze"),
        _reshape,
    ),
}
LOWERINGS.update(SNN_LOWERINGS)  # snncompile.nn neurons (custom ops)

# Ops without a tensor result for the model: runtime asserts and shape bookkeeping.
SKIPPED = frozenset({
    "_assert_tensor_metadata", "_assert_async", "_assert_scalar", "_functional_assert_async",
    "sym_constrain_range", "sym_constrain_range_for_size", "_functional_sym_constrain_range",
    "_functional_sym_constrain_range_for_size", "_make_dep_token",
})

# Ops evaluated ahead of time when all their tensor inputs are constants (e.g. W.t() in addmm).
FOLDABLE = frozenset({
    "t", "permute", "transpose", "numpy_T", "view", "reshape", "_unsafe_view", "flatten",
    "squeeze", "unsqueeze", "expand", "clone", "detach", "alias", "lift_fresh_copy",
    "contiguous", "_to_copy", "to", "add", "sub", "mul", "div", "neg", "sqrt", "rsqrt",
    "reciprocal", "pow",
})

HINTS: dict[str, str] = {
    **dict.fromkeys(
        ("max_pool1d", "max_pool3d", "adaptive_max_pool2d", "adaptive_max_pool1d", "max_pool1d_with_indices"),
        "use MaxPool2d (compiled with --maxpool avg) or AvgPool2d",
    ),
    **dict.fromkeys(
        ("sigmoid", "tanh", "gelu", "silu", "elu", "selu", "celu", "leaky_relu",
         "hardswish", "hardsigmoid", "softplus", "mish", "prelu", "_prelu_kernel", "rrelu",
         "log_sigmoid"),
        "use ReLU (or a clipped ReLU: ReLU6, Hardtanh(0, a))",
    ),
    **dict.fromkeys(
        ("softmax", "_softmax", "log_softmax", "_log_softmax"),
        "remove the softmax; the predicted class is the argmax of the logits",
    ),
    **dict.fromkeys(
        ("conv1d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
        "only Conv2d (2-D, not transposed) is supported",
    ),
    **dict.fromkeys(
        ("layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "instance_norm"),
        "use BatchNorm, which folds into the preceding layer",
    ),
    **dict.fromkeys(
        ("mul", "div", "sub", "rsub", "pow", "neg", "exp", "log", "sqrt", "rsqrt"),
        "arithmetic on activations has no spiking mapping; only a residual add is supported",
    ),
    **dict.fromkeys(
        ("stack", "split", "split_with_sizes", "chunk", "slice", "select",
         "index", "unbind", "narrow"),
        "slicing activations is not supported (channel concatenation is)",
    ),
    **dict.fromkeys(
        ("avg_pool1d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool3d"),
        "use AvgPool2d",
    ),
    **dict.fromkeys(
        ("upsample_nearest2d", "upsample_bilinear2d", "pixel_shuffle"),
        "resizing is not supported",
    ),
    **dict.fromkeys(
        ("pad", "constant_pad_nd", "reflection_pad2d", "replication_pad2d", "circular_pad2d"),
        "use the convolution's own zero padding (padding_mode='zeros') instead of a pad op",
    ),
}
