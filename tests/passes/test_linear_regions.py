"""Linear regions between neurons become synapses, composed as convolutions (passes.linear_regions).

Each test follows the rewrite-rule template: how many synapses result, the new structure, the
numbers (the ANN's output is unchanged, to float64 rounding) and a negative case.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompile.errors import UnsupportedModelError
from snncompile.frontends.torch import from_module
from snncompile.ir.ops import AvgPool2d, Concat, Conv2d, Dense, ReLU
from snncompile.passes import pipeline
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.linear_regions import LowerLinearRegions
from snncompile.sim import ann
from tests.zoo.models import randomize_batchnorm


def lowered(model: nn.Module, shape=(3, 16, 16), **kw):
    torch.manual_seed(0)
    graph = from_module(randomize_batchnorm(model.eval()), torch.zeros((1,) + shape))
    before = pipeline.run(graph, (fold_batchnorm,))
    after = pipeline.run(before, (LowerLinearRegions(**kw),))
    x = np.random.default_rng(0).random((4,) + shape)
    ref = ann.forward(graph, x).numpy()
    out = ann.forward(after, x).numpy().reshape(ref.shape)
    return graph, after, ref, out


def between_neurons(graph):
    """Every op between two ReLUs is one synapse or a sum of synapses: no pool, BN, Concat."""
    for name, op in graph.nodes():
        if isinstance(op, (AvgPool2d, Concat)):
            assert not any(isinstance(graph.op(s), ReLU) for s in graph.inputs(name)), name


class PoolBetweenConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(16 * 16, 10))

    def forward(self, x):
        return self.body(x)


def test_pool_folds_into_the_next_conv_as_one_strided_conv():
    graph, after, ref, out = lowered(PoolBetweenConvs())
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    between_neurons(after)
    convs = [after.op(n) for n in after.find(Conv2d)]
    folded = [c for c in convs if c.weight.shape[2:] == (6, 6)]
    assert len(folded) == 1 and folded[0].stride == (2, 2) and folded[0].padding == (2, 2)
    # the last pool folds into the Linear: fan-in 16·8·8, not a matrix over the conv
    dense = [after.op(n) for n in after.find(Dense)]
    assert [d.weight.shape for d in dense] == [(10, 16 * 8 * 8)]
    assert after.metadata["linear_regions"]["relays"] == []


class OverlappingPool(nn.Module):
    """ResNet's stem: a 3x3/2 pool with padding 1 before a padded 3x3 conv, and an identity
    shortcut from the pool."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AvgPool2d(3, 2, 1)
        self.conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        p = self.pool(self.stem(x))
        y = torch.relu(self.conv(p) + p)
        return self.head(y.mean((2, 3)))


def test_an_inexact_fold_gets_relay_neurons_and_keeps_the_ann():
    graph, after, ref, out = lowered(OverlappingPool())
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    relays = after.metadata["linear_regions"]["relays"]
    assert [r["pool"] for r in relays] == ["pool"]
    assert relays[0]["extra_neurons"] == 8 * 8 * 8 and "padding" in relays[0]["reason"]
    between_neurons(after)


class Fire(nn.Module):
    """SqueezeNet's fire module: squeeze 1x1, expand 1x1 and 3x3 concatenated on channels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.squeeze = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.after = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(12, 10, 1))

    def forward(self, x):
        s = self.squeeze(self.stem(x))
        y = self.after(torch.cat([self.e1(s), self.e3(s)], 1))
        return y.mean((2, 3))


def test_concat_is_wiring_each_consumer_reads_its_slice():
    graph, after, ref, out = lowered(Fire())
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    assert not after.find(Concat)
    sources = {after.inputs(s)[0] for n in after.output_names() for s in after.inputs(after.inputs(n)[0])}
    assert len(sources) == 2  # one synapse from each concatenated population


class Bottleneck(nn.Module):
    """MobileNetV2's inverted residuals: linear bottlenecks (no ReLU after the projection) added."""

    def __init__(self, c=8, hidden=24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU6())

        def block():
            return nn.Sequential(nn.Conv2d(c, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU6(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.BatchNorm2d(hidden),
                                 nn.ReLU6(), nn.Conv2d(hidden, c, 1), nn.BatchNorm2d(c))
        self.proj = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c))
        self.b1, self.b2 = block(), block()
        self.head = nn.Sequential(nn.Conv2d(c, 16, 1), nn.ReLU6())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.proj(self.stem(x))  # linear: no activation
        x = x + self.b1(x)
        x = x + self.b2(x)
        return self.fc(self.head(x).mean((2, 3)))


def test_linear_bottleneck_adds_fold_onto_the_next_synapses():
    graph, after, ref, out = lowered(Bottleneck())
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    assert after.metadata["linear_regions"]["relays"] == []
    # the head's neurons sum three synapses: from the stem and from each block's depthwise layer
    head = [n for n in after.find(ReLU) if n.startswith("head")]
    (add,) = after.inputs(head[0])
    assert len(after.inputs(add)) == 3
    # depthwise convs keep their groups
    assert any(after.op(n).groups == 24 for n in after.find(Conv2d))
    # clipped ReLUs carry their clip
    assert {after.op(n).upper for n in after.find(ReLU)} == {6.0}


def test_a_bias_before_a_padded_conv_is_refused_in_one_line():
    """Negative case: the bias of a 1x1 conv seen through a padded 3x3 conv differs at the border,
    which no per-channel bias can hold."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 3))
    with pytest.raises(UnsupportedModelError) as info:
        lowered(model)
    assert "\n" not in str(info.value) and "varies within a channel" in str(info.value)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 3), s=st.integers(1, 3), p=st.integers(0, 1), kc=st.sampled_from([1, 3, 5]),
       sc=st.integers(1, 2), pc=st.integers(0, 2), size=st.integers(7, 13), groups=st.sampled_from([1, 2]))
def test_any_pool_then_conv_lowers_exactly(k, s, p, kc, sc, pc, size, groups):
    """Law: whatever the windows, the lowered ANN computes what the model computes (by folding
    when that is exact, by relay neurons otherwise)."""
    if p * 2 > k or (size + 2 * p - k) // s + 1 < 1:
        return
    pooled = (size + 2 * p - k) // s + 1
    if (pooled + 2 * pc - kc) // sc + 1 < 1:
        return
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(k, s, p),
                          nn.Conv2d(4, 6, kc, sc, pc, groups=groups), nn.ReLU(), nn.Flatten(),
                          nn.LazyLinear(5))
    model(torch.zeros(1, 3, size, size))
    _graph, after, ref, out = lowered(model, (3, size, size))
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    between_neurons(after)


def test_adaptive_pooling_with_unequal_windows_folds_into_the_linear():
    """torchvision's VGG and AlexNet pool to 7×7 / 6×6 whatever the input: at small inputs the
    windows are unequal (or repeat rows); the separable map folds into the classifier."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(7),
                          nn.Flatten(), nn.Linear(4 * 49, 5))
    graph, after, ref, out = lowered(model, (3, 10, 10))
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    assert [after.op(n).weight.shape for n in after.find(Dense)] == [(5, 4 * 10 * 10)]
