"""Train a small spiking ResNet on scikit-learn's 8x8 digits, one per residual connection type.

    python examples/train_spiking_resnet.py                        # all four, LIF neurons
    python examples/train_spiking_resnet.py --neuron if --connections membrane_add

The model (``snncompile.nn.SpikingResNet``): host stem conv 1→8 (3x3) → neuron → 2 residual
blocks of two 3x3 convs → Linear → Integrator readout, T steps, surrogate-gradient BPTT. Its
float semantics are those of the compiled network (one step of delay per synapse between
neurons), so ``snncompile compile <file> --target loihi2 --steps T`` measures the same network.
Each model is saved with ``torch.export.save`` as examples/spiking_resnet_<connection>_<neuron>.pt2;
a few minutes in all on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import snncompile.nn as snn
from snncompile.data import digits

HERE = Path(__file__).resolve().parent


def accuracy(model: snn.SpikingResNet, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(torch.tensor(x)).argmax(1).numpy()
    return float(np.mean(pred == y))


def train(connection: str, neuron: str, steps: int = 8, epochs: int = 6, seed: int = 0,
          batch: int = 64, lr: float = 5e-3) -> tuple[snn.SpikingResNet, dict]:
    """A trained model and its float accuracies (train, test) on the digits split."""
    torch.manual_seed(seed)
    ds = digits()
    model = snn.SpikingResNet(connection, neuron, steps=steps)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    x, y = torch.tensor(ds.train.x), torch.tensor(ds.train.y)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(batch):
            loss = torch.nn.functional.cross_entropy(model(x[idx]) / steps, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    info = {"connection": connection, "neuron": neuron, "steps": steps, "epochs": epochs,
            "train_s": round(time.perf_counter() - start, 1),
            "train_accuracy": accuracy(model, ds.train.x, ds.train.y),
            "float_accuracy": accuracy(model, ds.test.x, ds.test.y)}
    return model.eval(), info


def save(model: snn.SpikingResNet, path: Path) -> Path:
    example = torch.tensor(digits().test.x[:2])
    torch.export.save(torch.export.export(model.eval(), (example,)), path)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", nargs="+", default=list(snn.CONNECTIONS), choices=snn.CONNECTIONS)
    parser.add_argument("--neuron", default="lif", choices=("lif", "if"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    for connection in args.connections:
        model, info = train(connection, args.neuron, args.steps, args.epochs)
        path = save(model, args.out / f"spiking_resnet_{connection}_{args.neuron}.pt2")
        print(f"{path.name}: float SNN test accuracy {info['float_accuracy']:.4f} "
              f"(train {info['train_accuracy']:.4f}, {info['train_s']} s)", flush=True)


if __name__ == "__main__":
    main()
