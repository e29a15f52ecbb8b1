"""Small float graphs built directly in the IR, shared by the tests."""

from __future__ import annotations

import numpy as np
from snncompile.ir import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, ReLU, chain


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
