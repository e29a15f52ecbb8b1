"""Train the bundled digits models and save them with torch.export.save.

    python examples/train_digits_cnn.py          # CNN  -> examples/digits_cnn.pt2
    python examples/train_digits_cnn.py --mlp    # MLP  -> examples/digits_mlp.pt2
    python examples/train_digits_cnn.py --resnet # small ResNet -> examples/digits_resnet.pt2
    python examples/train_digits_cnn.py --vgg    # VGG-style CNN -> examples/digits_vgg.pt2

The CNN is Conv(1->16)-BN-ReLU, Conv(16->32, stride 2)-BN-ReLU, AvgPool 2, Flatten, Linear(128->10)
on 1x8x8 images; the MLP is 64-64-32-10 with ReLU on flat 64-pixel vectors; the ResNet is a stem
conv, one post-activation residual block with an identity shortcut, a strided conv, global
average pooling and a Linear readout; the VGG-style CNN (not tuned for this compiler) has average
pooling *between* convs: Conv(1->16)-BN-ReLU, Conv(16->16)-BN-ReLU, AvgPool 2, Conv(16->32)-BN-ReLU,
AvgPool 2, Flatten, Linear(128->10). All train on the
training split of ``snncompile.data.digits`` with Adam and a fixed seed, in a few seconds on two
CPU cores, and are exported in eval mode with a dynamic batch dimension. On a 2-core AMD EPYC
(2026-12-07) the CNN, the MLP and the ResNet come out with the bundled files' weights exactly;
the VGG-style CNN's differ (by up to 0.21, the same 99.72 % test accuracy): float sums differ
between processors, and the bundled files are the benchmark's models.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from snncompile.data import digits

HERE = Path(__file__).resolve().parent


def make_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


def make_vgg() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    )


def make_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


class ResNet(nn.Module):
    """stem Conv-BN-ReLU; block: relu(bn(conv(relu(bn(conv(h))))) + h); Conv(s2)-BN-ReLU; GAP; Linear."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.conv1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.relu = nn.ReLU()
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        h = self.stem(x)
        h = self.relu(self.conv2(self.conv1(h)) + h)
        # global average pooling as a mean over (H, W): torch 2.13's dynamo ONNX exporter turns
        # flatten(AdaptiveAvgPool2d(1)(x)) into an as_strided Gather chain instead of a Flatten
        return self.fc(self.down(h).mean(dim=(2, 3)))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    """Adam on shuffled mini-batches; the shuffling has its own seeded generator."""
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _epoch in range(epochs):
        for batch in torch.randperm(len(x), generator=order).split(32):
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
        schedule.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(1) == y).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--mlp", action="store_true", help="train the 64-64-32-10 MLP instead")
    kind.add_argument("--resnet", action="store_true", help="train the small ResNet instead")
    kind.add_argument("--vgg", action="store_true", help="train the VGG-style CNN (pooling between convs)")
    parser.add_argument("--out", type=Path, help="output file (default: examples/digits_*.pt2)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    data = digits(image=not args.mlp)
    x_train, y_train = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    x_test, y_test = torch.from_numpy(data.test.x), torch.from_numpy(data.test.y)

    name = "mlp" if args.mlp else "resnet" if args.resnet else "vgg" if args.vgg else "cnn"
    model = {"mlp": make_mlp, "resnet": ResNet, "cnn": make_cnn, "vgg": make_vgg}[name]()
    start = time.perf_counter()
    train(model, x_train, y_train, args.epochs, args.seed)
    seconds = time.perf_counter() - start
    model.eval()
    print(f"trained {name} for {args.epochs} epochs in {seconds:.1f} s")
    print(f"test accuracy {accuracy(model, x_test, y_test):.4f} on {len(x_test)} samples")

    out = args.out or HERE / f"digits_{name}.pt2"
    batch = torch.export.Dim("batch", min=1)
    example = x_test[:2].clone()  # a view would save the whole test set with it
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out)
    exported = accuracy(program.module(), x_test, y_test)
    print(f"saved {out} ({out.stat().st_size / 1024:.0f} KiB), exported accuracy {exported:.4f}")


if __name__ == "__main__":
    main()
