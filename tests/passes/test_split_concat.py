"""Per-channel ops move through a channel Concat (passes.split_concat): DenseNet's pre-activation.

Rewrite-rule template: the new structure (one BatchNorm slice and one ReLU per Concat input, the
Concat after them), the numbers (the ANN's output unchanged), the synapses it saves (no kernel
zero-padded to the concatenated width), and the cases it leaves alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from snncompile.frontends.torch import from_module
from snncompile.ir.ops import BatchNorm, Concat, Conv2d, ReLU
from snncompile.passes import pipeline
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.linear_regions import LowerLinearRegions
from snncompile.passes.split_concat import split_concat
from snncompile.sim import ann
from tests.zoo.models import randomize_batchnorm


class DenseBlock(nn.Module):
    """Two DenseNet layers (BN-ReLU-1×1 conv-BN-ReLU-3×3 conv on the concatenation so far) and a
    transition's BN-ReLU, as torchvision's _DenseLayer writes them."""

    def __init__(self, c0=6, growth=4, layers=2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, padding=1), nn.ReLU())
        self.layers = nn.ModuleList()
        c = c0
        for _ in range(layers):
            self.layers.append(nn.Sequential(
                nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 8, 1, bias=False),
                nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, growth, 3, padding=1, bias=False)))
            c += growth
        self.norm = nn.BatchNorm2d(c)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.head(self.norm(torch.cat(features, 1)))


def graphs(model, shape=(3, 8, 8)):
    torch.manual_seed(0)
    graph = from_module(randomize_batchnorm(model.eval()), torch.zeros((1,) + shape))
    folded = pipeline.run(graph, (fold_batchnorm,))
    return graph, folded, pipeline.run(folded, (split_concat,))


def test_relu_of_batchnorm_of_concat_becomes_a_concat_of_slices():
    graph, folded, split = graphs(DenseBlock())
    record = split.metadata["split_concat"]
    # layer 1 reads 2 maps, the head 3 (layer 0 reads the stem alone: no Concat)
    assert [len(r["parts"]) for r in record] == [2, 3]
    for r in record:
        assert isinstance(split.op(r["relu"]), Concat)  # the name stays, now the Concat of the slices
        for part in r["parts"]:
            assert isinstance(split.op(part), ReLU)
            (bn,) = split.inputs(part)
            assert isinstance(split.op(bn), BatchNorm)
        assert sum(split.shape(p)[0] for p in r["parts"]) == split.shape(r["relu"])[0]
    x = np.random.default_rng(0).random((4, 3, 8, 8))
    np.testing.assert_allclose(ann.forward(split, x).numpy(), ann.forward(graph, x).numpy(), rtol=1e-9, atol=1e-9)


def test_each_synapse_reaches_only_its_slice():
    """Without the split, every conv reaching a post-Concat ReLU writes the whole concatenated
    width (zeros outside its slice); with it, each kernel is the conv's own output channels."""
    _, folded, split = graphs(DenseBlock(c0=6, growth=4, layers=3))

    def widest(graph):
        lowered = pipeline.run(graph, (LowerLinearRegions(),))
        return lowered, max(op.weight.shape[0] for _, op in lowered.nodes()
                            if isinstance(op, Conv2d) and op.weight.shape[1] == 8)  # fed by a bottleneck

    _, before = widest(folded)
    lowered, after = widest(split)
    assert before == 6 + 4 * 3 and after == 4  # the full concatenation vs the growth rate
    x = np.random.default_rng(1).random((3, 3, 8, 8))
    np.testing.assert_allclose(ann.forward(lowered, x).numpy().reshape(3, -1),
                               ann.forward(folded, x).numpy().reshape(3, -1), rtol=1e-9, atol=1e-9)


class ConcatOfReLUs(nn.Module):
    """SqueezeNet's fire module: the Concat of two ReLU branches, no ReLU after it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def test_concat_without_a_relu_after_it_is_left_alone():
    _, folded, split = graphs(ConcatOfReLUs())
    assert split is folded and "split_concat" not in split.metadata


def test_a_batchnorm_with_other_users_stays_whole():
    """BN(Concat) read by the ReLU and by something else: splitting would duplicate it; left alone."""

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
            self.bn = nn.BatchNorm2d(8)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 64, 10))

        def forward(self, x):
            y = self.bn(torch.cat([self.a(x), self.b(x)], 1))
            return self.head(torch.relu(y) + y)

    _, folded, split = graphs(Shared())
    assert split is folded
