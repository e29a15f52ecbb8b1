"""The model zoo the tests and benchmarks compile: torchvision's own constructors and the
calibration paper's CIFAR networks, untrained (weights=None) or trained on digits upsampled to
32×32×3.

torchvision 0.28.0 is installed with ``--no-deps``; its compiled extension links CUDA and does
not load beside the CPU build of torch, and its Python code registers fake kernels for the
``torchvision::nms`` / ``qnms`` ops at import. Declaring those two schemas first (a
``torch.library`` DEF library) is all the model constructors need.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn


@functools.cache
def torchvision():
    """``import torchvision`` after declaring the op schemas its Python code expects."""
    try:
        torch.ops.torchvision.nms  # noqa: B018  already declared (or the extension loaded)
    except (AttributeError, RuntimeError):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold, Tensor? offsets) -> Tensor")
        torchvision._library = lib  # keep the definitions alive
    import torchvision as tv

    return tv


TORCHVISION = ("resnet18", "resnet34", "vgg11_bn", "vgg16_bn", "alexnet", "mobilenet_v2", "squeezenet1_1",
               "densenet121", "efficientnet_b0", "regnet_x_400mf")


def torchvision_model(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """torchvision's own constructor, random init (weights=None), in eval mode, seeded."""
    torch.manual_seed(0)
    model = getattr(torchvision().models, name)(weights=None, num_classes=num_classes, **kwargs)
    return model.eval()


def maxpool_to_avg(model: nn.Module) -> nn.Module:
    """Every MaxPool2d replaced by an AvgPool2d of the same window (what ``--maxpool avg`` does
    inside the compiler; used to build models that never had a max-pool)."""
    for name, child in model.named_children():
        if isinstance(child, nn.MaxPool2d):
            setattr(model, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
        else:
            maxpool_to_avg(child)
    return model


# ---------------------------------------------------------------------------------------------
# The calibration paper's CIFAR networks (Li et al. 2021: ResNet-20 and VGG-16, 32×32 inputs).


class BasicBlock(nn.Module):
    """ResNet-20's block: conv-BN-ReLU-conv-BN + shortcut (identity, or 1×1 strided conv + BN), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (He et al. 2016 §4.2): 3 stages × 3 blocks of 16, 32, 64 channels
    (``channels`` narrows them for CI-sized variants)."""

    def __init__(self, num_classes: int = 10, channels: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        c = list(channels)
        self.stem = nn.Sequential(nn.Conv2d(3, c[0], 3, 1, 1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU())
        blocks, cin = [], c[0]
        for i, cout in enumerate(c):
            for j in range(3):
                blocks.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


VGG16_CFG = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P")


class VGG16(nn.Module):
    """CIFAR VGG-16 as conversion papers use it: conv-BN-ReLU, AvgPool in place of MaxPool, then
    Linear-ReLU-Linear. ``width`` divides every channel count (CI-sized variants)."""

    def __init__(self, num_classes: int = 10, width_div: int = 1, hidden: int = 512):
        super().__init__()
        layers, cin = [], 3
        for v in VGG16_CFG:
            if v == "P":
                layers.append(nn.AvgPool2d(2, 2))
            else:
                cout = max(v // width_div, 4)
                layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
        self.features = nn.Sequential(*layers)
        hidden = max(hidden // width_div, 8)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so folding BN is tested (fresh BN is the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def digits32(n_train: int | None = None, seed: int = 0):
    """scikit-learn's digits upsampled to 32×32×3 (nearest, ×4, the gray value on 3 channels), the
    fixed 80/20 split of ``snncompile.data.digits``: (x_train, y_train, x_test, y_test), float32."""
    from snncompile.data import digits

    ds = digits(image=True)

    def up(x):
        x = torch.as_tensor(x).repeat_interleave(4, -1).repeat_interleave(4, -2)
        return x.repeat(1, 3, 1, 1).numpy().astype("float32")

    return up(ds.train.x), ds.train.y, up(ds.test.x), ds.test.y


def write_digits32(path, test_samples: int | None = None) -> str:
    """``digits32`` as an .npz the CLI reads with ``--data`` (train = calibration, test = evaluation;
    its first ``test_samples`` when given)."""
    import numpy as np

    xtr, ytr, xte, yte = digits32()
    np.savez(path, x_train=xtr, y_train=ytr, x=xte[:test_samples], y=yte[:test_samples])
    return str(path)


def train(model: nn.Module, x, y, epochs: int = 30, seed: int = 0, lr: float = 3e-3) -> nn.Module:
    """Adam on (x, y), batches of 64, seeded; returns the model in eval mode."""
    import numpy as np

    torch.manual_seed(seed)
    x, y = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def export(model: nn.Module, shape: tuple[int, ...], path) -> str:
    """torch.export of ``model`` for one sample of ``shape``, saved as a .pt2."""
    torch.export.save(torch.export.export(model.eval(), (torch.zeros((1,) + tuple(shape)),)), path)
    return str(path)


def train_on_digits32(model: nn.Module, out, epochs: int, seed: int = 0) -> tuple[float, float]:
    """Train ``model`` on digits32's train split (``train``, seeded), export it for one (3, 32, 32)
    sample to ``out``: (its test accuracy, the seconds it took)."""
    import time

    import numpy as np

    xtr, ytr, xte, yte = digits32()
    t0 = time.perf_counter()
    train(model, xtr, ytr, epochs=epochs, seed=seed)
    with torch.no_grad():
        acc = float(np.mean(model(torch.as_tensor(xte)).argmax(1).numpy() == yte))
    export(model, (3, 32, 32), out)
    return acc, time.perf_counter() - t0
