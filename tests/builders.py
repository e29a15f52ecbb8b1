"""Small float graphs built directly in the IR, and torch model helpers, shared by the tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from snncompile.ir import Add, AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, GraphBuilder, Input, Output, ReLU, chain


def make_cnn(seed: int = 0, bn: bool = True):
    """Conv(pad 1, stride 1)-BN-ReLU, Conv(pad 1, stride 2)-BN-ReLU, AvgPool, Flatten, Linear on 1x8x8."""
    rng = np.random.default_rng(seed)

    def bnorm(c):
        return BatchNorm(mean=rng.normal(0, 0.1, c), var=rng.uniform(0.5, 1.5, c),
                         gamma=rng.uniform(0.5, 1.5, c), beta=rng.normal(0, 0.1, c))

    ops = [("conv1", Conv2d(weight=rng.normal(0, 0.4, (8, 1, 3, 3)), bias=rng.normal(0, 0.1, 8), padding=1))]
    ops += [("bn1", bnorm(8))] if bn else []
    ops += [("relu1", ReLU()),
            ("conv2", Conv2d(weight=rng.normal(0, 0.15, (16, 8, 3, 3)), bias=rng.normal(0, 0.1, 16),
                             padding=1, stride=2))]
    ops += [("bn2", bnorm(16))] if bn else []
    ops += [("relu2", ReLU()), ("pool", AvgPool2d(kernel=2, stride=2)), ("flat", Flatten()),
            ("fc", Dense(weight=rng.normal(0, 0.2, (10, 64)), bias=rng.normal(0, 0.1, 10)))]
    return chain((1, 8, 8), ops)


def make_mlp(seed: int = 0, sizes=(64, 32, 16, 10)):
    rng = np.random.default_rng(seed)
    ops = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        ops.append((f"fc{i + 1}", Dense(weight=rng.normal(0, 1.5 / np.sqrt(a), (b, a)), bias=rng.normal(0, 0.1, b))))
        if i < len(sizes) - 2:
            ops.append((f"relu{i + 1}", ReLU()))
    return chain((sizes[0],), ops)


def make_deep_cnn(seed: int = 0):
    """Three convs so that both a stride-1 and a stride-2 padded conv run on the chip (the first
    conv runs on the host): host Conv(s1,p1) -> Conv(s1,p1) -> Conv(s2,p1) -> AvgPool -> Linear."""
    rng = np.random.default_rng(seed)
    return chain((1, 8, 8), [
        ("conv1", Conv2d(weight=rng.normal(0, 0.4, (4, 1, 3, 3)), bias=rng.normal(0, 0.1, 4), padding=1)),
        ("relu1", ReLU()),
        ("conv2", Conv2d(weight=rng.normal(0, 0.25, (6, 4, 3, 3)), bias=rng.normal(0, 0.1, 6), padding=1)),
        ("relu2", ReLU()),
        ("conv3", Conv2d(weight=rng.normal(0, 0.2, (8, 6, 3, 3)), bias=rng.normal(0, 0.1, 8),
                         padding=1, stride=2)),
        ("relu3", ReLU()),
        ("pool", AvgPool2d(kernel=2, stride=2)),
        ("flat", Flatten()),
        ("fc", Dense(weight=rng.normal(0, 0.3, (10, 32)), bias=rng.normal(0, 0.1, 10))),
    ])


def make_resnet(seed: int = 0):
    """A post-activation residual block with an identity shortcut, then a strided conv:
    conv1-ReLU (host) -> [conv2-ReLU-conv3] + shortcut -> ReLU -> conv4 (s2) -> ReLU -> pool -> fc."""
    rng = np.random.default_rng(seed)

    def conv(c_in, c_out, stride=1, std=0.25):
        return Conv2d(weight=rng.normal(0, std, (c_out, c_in, 3, 3)), bias=rng.normal(0, 0.05, c_out),
                      padding=1, stride=stride)

    b = GraphBuilder()
    b.add("input", Input(shape=(1, 8, 8)))
    b.add("conv1", conv(1, 4, std=0.4), ["input"])
    b.add("relu1", ReLU(), ["conv1"])
    b.add("conv2", conv(4, 4), ["relu1"])
    b.add("relu2", ReLU(), ["conv2"])
    b.add("conv3", conv(4, 4), ["relu2"])
    b.add("add", Add(), ["conv3", "relu1"])
    b.add("relu3", ReLU(), ["add"])
    b.add("conv4", conv(4, 8, stride=2), ["relu3"])
    b.add("relu4", ReLU(), ["conv4"])
    b.add("pool", AvgPool2d(kernel=2, stride=2), ["relu4"])
    b.add("flat", Flatten(), ["pool"])
    b.add("fc", Dense(weight=rng.normal(0, 0.3, (10, 32)), bias=rng.normal(0, 0.1, 10)), ["flat"])
    b.add("output", Output(), ["fc"])
    return b.build()


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so BatchNorm is really tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.3)
    return model.eval()


def small_cnn() -> nn.Sequential:
    """The torch twin of ``make_cnn``'s shape (conv-BN-ReLU twice, pool, flatten, linear), for
    the frontend tests."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
