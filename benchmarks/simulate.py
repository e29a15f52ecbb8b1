"""Simulation speed on the same compiled graphs: Lava fixed_pt, the exact reference simulator and
snnTorch, with a bit-for-bit check of reference == Lava. Writes benchmarks/results/simulate.md.

    .venv/bin/python benchmarks/simulate.py [--device cpu|cuda] [--steps 32] [--threads 1]

Networks: the bundled digits MLP and CNN, and a family of wider CNNs with random weights on
3-channel images (compiled the same way, with random calibration data) whose largest member has
more than 100k neurons; the family also gives the cost growth with network size.

Every side gets the same fixed-point graph, the same inputs and the same T:
(a) Lava fixed_pt (``run_lava``), one sample at a time, a few samples (seconds to minutes each);
(b) the reference simulator ``snncompile.sim.fixed.simulate`` on the whole batch, without
    recording (the speed) and with it (the check against (a), bit for bit);
(c) snnTorch's float simulation of the same network: torch Linear/Conv2d layers holding the
    integer weights (times 64, Loihi's a_in << 6), snntorch.Leaky(beta=1) with the graph's
    reset and threshold vth << 6, the host-encoded input as a constant current. It is not
    bit-exact (no synaptic delay, no 24-bit state, snnTorch's own reset order): a speed
    comparison only; its argmax agreement with (b) is printed as a sanity check.
Runs are interleaved (one Lava sample, then each other side, round after round) so that noise
from other jobs on the machine falls on all sides alike; the tables give medians.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snncompile.api import load_model  # noqa: E402
from snncompile.data import digits  # noqa: E402
from snncompile.frontends.torch import from_module  # noqa: E402
from snncompile.ir.graph import Graph  # noqa: E402
from snncompile.ir.ops import BiasEncoder, FixedConv2d, FixedDense, LoihiNeuron, Reset  # noqa: E402
from snncompile.passes import pipeline  # noqa: E402
from snncompile.sim import fixed  # noqa: E402
from snncompile.sim.ann import encode_inputs  # noqa: E402
from snncompile.sim.trace import Trace, compare  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Networks.


@dataclass
class Network:
    name: str
    graph: Graph
    x: np.ndarray  # the batch every side simulates
    lava_samples: int  # how many of its first samples Lava runs


def wide_cnn(side: int, width: int = 16, seed: int = 0) -> nn.Sequential:
    """conv(3->w) ReLU conv(w->2w, stride 2) ReLU conv(2w->2w, stride 2) ReLU flatten linear(->10).

    Neurons: w·side² + 2w·(side/2)² + 2w·(side/4)² + 10; 106,506 for side 64, w 16.
    """
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * width * (side // 4) ** 2, 10),
    )


def networks(args) -> list[Network]:
    nets = []
    for name, path, image in (("digits MLP", "examples/digits_mlp.pt2", False),
                              ("digits CNN", "examples/digits_cnn.pt2", True)):
        ds = digits(image=image)
        graph = pipeline.run(load_model(ROOT / path), pipeline.loihi2(ds.train.x[:256], args.steps))
        nets.append(Network(name, graph, ds.test.x[: args.batch], args.lava_samples))
    rng = np.random.default_rng(0)
    for side in args.sides:
        calib = rng.uniform(0, 1, (32, 3, side, side)).astype(np.float32)
        graph = from_module(wide_cnn(side), torch.from_numpy(calib[:1]))
        graph = pipeline.run(graph, pipeline.loihi2(calib, args.steps))
        x = rng.uniform(0, 1, (args.wide_batch, 3, side, side)).astype(np.float32)
        lava = args.lava_samples if neuron_count(graph) < 20_000 else args.lava_samples_wide
        nets.append(Network(f"wide CNN 3x{side}x{side}", graph, x, lava))
    return nets


def neuron_count(graph: Graph) -> int:
    return sum(int(np.prod(graph.shape(n))) for n in graph.find(LoihiNeuron))


def fan_out(graph: Graph) -> dict[str, np.ndarray]:
    """Per LoihiNeuron, how many synapses each of its neurons drives (structural connections:
    every weight a spike reaches, zero weights included)."""
    out = {}
    for name in graph.find((FixedDense, FixedConv2d)):
        op = graph.op(name)
        (pre,) = graph.inputs(name)
        x = torch.ones((1,) + graph.shape(pre), dtype=torch.float64, requires_grad=True)
        mask = torch.ones(op.weight.shape, dtype=torch.float64)
        if isinstance(op, FixedDense):
            y = x.reshape(1, -1) @ mask.T
        else:
            y = F.conv2d(x, mask, None, op.stride, op.padding, op.dilation, op.groups)
        y.sum().backward()
        out[pre] = out.get(pre, 0) + x.grad[0].numpy()
    return out


def synapse_count(graph: Graph) -> int:
    return int(sum(f.sum() for f in fan_out(graph).values()))


def synaptic_events(fanout: dict[str, np.ndarray], spikes: dict[str, np.ndarray]) -> int:
    """Spikes times the synapses each drives, summed over samples, steps and neurons."""
    return int(sum((spikes[k].sum(axis=(0, 1), dtype=np.int64) * f).sum() for k, f in fanout.items()))


# ---------------------------------------------------------------------------------------------
# (c) snnTorch.


class SnnTorchNet(nn.Module):
    """The fixed-point graph as an snnTorch network (float, no synaptic delay)."""

    def __init__(self, graph: Graph, dtype: torch.dtype):
        import snntorch

        super().__init__()
        self.order = graph.find(LoihiNeuron)
        self.readout = self.order[-1]
        self.lif = nn.ModuleDict()
        self.syn = nn.ModuleDict()
        self.feeds: dict[str, list[tuple[str, str]]] = {}
        self.encoders: dict[str, str] = {}
        static = {}
        for name in self.order:
            op = graph.op(name)
            vth = torch.tensor(op.vth.astype(np.float64) * 64, dtype=dtype)
            reset = "zero" if op.reset is Reset.ZERO else "subtract"
            self.lif[name] = snntorch.Leaky(beta=1.0, threshold=vth, reset_mechanism=reset)
            self.feeds[name] = []
            bias = np.left_shift(op.bias_mant, op.bias_exp).astype(np.float64)
            if np.any(bias):
                static[name] = torch.tensor(bias, dtype=dtype)
            for src in graph.inputs(name):
                sop = graph.op(src)
                if isinstance(sop, BiasEncoder):
                    self.encoders[name] = src
                    continue
                (pre,) = graph.inputs(src)
                w = torch.tensor(sop.weight.astype(np.float64) * 64, dtype=dtype)
                if isinstance(sop, FixedDense):
                    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
                    w = w * 2.0 ** sop.weight_exp
                else:
                    layer = nn.Conv2d(w.shape[1] * sop.groups, w.shape[0], tuple(w.shape[2:]), sop.stride,
                                      sop.padding, sop.dilation, sop.groups, bias=False)
                layer.weight = nn.Parameter(w.to(dtype), requires_grad=False)
                self.syn[src] = layer
                self.feeds[name].append((src, pre))
        self.static = static
        self.dtype = dtype

    def currents(self, encoded: dict, device) -> dict[str, torch.Tensor]:
        """Constant input currents: the host encoding (mant << exp) and static biases."""
        dtype = self.dtype
        out = {n: b.to(device) for n, b in self.static.items()}
        for name, enc in self.encoders.items():
            mant, exp, _ = encoded[enc]
            out[name] = torch.tensor(np.left_shift(mant, exp), dtype=dtype, device=device)
        return out

    @torch.inference_mode()
    def forward(self, currents: dict[str, torch.Tensor], n: int, steps: int) -> torch.Tensor:
        mem: dict[str, torch.Tensor | None] = dict.fromkeys(self.order)
        spk: dict[str, torch.Tensor] = {}
        for _ in range(steps):
            for name in self.order:
                cur = currents.get(name)
                for syn, pre in self.feeds[name]:
                    s = spk[pre].to(self.dtype)  # snnTorch's spikes are float32
                    s = s.flatten(1) if isinstance(self.syn[syn], nn.Linear) else s
                    x = self.syn[syn](s)
                    cur = x if cur is None else cur + x
                if mem[name] is None:
                    mem[name] = torch.zeros_like(cur)
                spk[name], mem[name] = self.lif[name](cur, mem[name])
        return mem[self.readout]


# ---------------------------------------------------------------------------------------------
# Timing.


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


@dataclass
class Row:
    name: str
    neurons: int
    synapses: int
    batch: int
    steps: int
    lava_s: list[float] = field(default_factory=list)  # per sample
    times: dict[str, list[float]] = field(default_factory=dict)  # side -> per-batch seconds
    events_batch: int = 0  # synaptic events in the batch (from the recorded reference run)
    events_lava: list[int] = field(default_factory=list)  # per Lava sample
    encode_s: float = 0.0
    mismatches: int = 0
    compared: str = ""
    argmax_agree: float = float("nan")
    sum_types: str = ""  # the reference's synaptic sums: how many run in float32 (sim.fixed.sum_dtypes)

    def median(self, side: str) -> float:
        return statistics.median(self.times[side])


def measure(net: Network, args) -> Row:
    from snncompile.backends.lava import run_lava

    graph, x, steps, device = net.graph, net.x, args.steps, args.device
    row = Row(net.name, neuron_count(graph), synapse_count(graph), len(x), steps)
    dtypes = fixed.sum_dtypes(graph)
    row.sum_types = f"{sum(d == 'float32' for d in dtypes.values())} of {len(dtypes)} in float32"
    t0 = time.perf_counter()
    encoded = encode_inputs(graph, x)
    row.encode_s = time.perf_counter() - t0
    one = encode_inputs(graph, x[:1])
    snn = {dt: SnnTorchNet(graph, dt).to(device) for dt in (torch.float32, torch.float64)}
    currents = {dt: m.currents(encoded, device) for dt, m in snn.items()}
    sides = {
        "ref": lambda: fixed.simulate(graph, x, steps, device=device, record=False, encoded=encoded),
        "ref_record": lambda: fixed.simulate(graph, x, steps, device=device, record=True, encoded=encoded),
        "ref_1": lambda: fixed.simulate(graph, x[:1], steps, device=device, record=False, encoded=one),
        "snntorch_f32": lambda: snn[torch.float32](currents[torch.float32], len(x), steps),
        "snntorch_f64": lambda: snn[torch.float64](currents[torch.float64], len(x), steps),
    }
    for fn in sides.values():  # warm-up: allocator, kernels, cuDNN heuristics
        fn()
    rounds = max(args.rounds, net.lava_samples)
    lava_traces = []
    order = list(sides)
    for r in range(rounds):
        if r < net.lava_samples:
            times: list[float] = []
            sample = x[r:r + 1]
            lava_traces.append(run_lava(graph, sample, steps, encoded=encode_inputs(graph, sample), timings=times))
            row.lava_s.append(times[0])
            print(f"  {net.name}: Lava sample {r}: {times[0]:.1f} s", flush=True)
        order = order[1:] + order[:1]  # rotate, so no side always runs right after Lava
        for side in order:
            seconds, out = timed(sides[side], device)
            row.times.setdefault(side, []).append(seconds)
            if side == "ref_record":
                recorded = out
            if side == "snntorch_f32":
                snn_out = out
    fanout = fan_out(graph)
    row.events_batch = synaptic_events(fanout, recorded.trace.spikes)
    ref_pred = fixed.output_values(graph, recorded).argmax(1)
    row.argmax_agree = float(np.mean(snn_out.float().cpu().numpy().argmax(1) == ref_pred))
    # The bit-for-bit check: the recorded reference batch against each Lava sample.
    n = len(lava_traces)
    if n:
        ref = fixed.simulate(graph, x[:n], steps, device=device, record=True, encoded=encode_inputs(graph, x[:n]))
        mismatches, cells = 0, 0
        for i, lava in enumerate(lava_traces):
            mine = Trace(steps=steps, spikes={k: v[i:i + 1] for k, v in ref.trace.spikes.items()},
                         v={k: v[i:i + 1] for k, v in ref.trace.v.items()})
            mismatches += compare(mine, lava).mismatches
            for out, value in lava.outputs.items():
                mismatches += int(np.sum(ref.trace.outputs[out][i:i + 1] != value))
            # and the batch run agrees with this small run on the same sample (batch invariance)
            mismatches += int(sum(np.sum(ref.trace.v[k][i] != recorded.trace.v[k][i])
                                  + np.sum(ref.trace.spikes[k][i] != recorded.trace.spikes[k][i])
                                  for k in ref.trace.v))
            cells += sum(v[i].size for v in ref.trace.v.values())
            row.events_lava.append(synaptic_events(fanout, mine.spikes))
        row.mismatches = mismatches
        row.compared = f"{n} sample(s) x {steps} steps x {row.neurons:,} neurons ({cells:,} values)"
    return row


# ---------------------------------------------------------------------------------------------
# Report.


def device_text(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device}: {torch.cuda.get_device_name()} (torch CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"cpu: {model}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2g}"


def sci(value: float) -> str:
    return "–" if value != value or value == 0 else f"{value:.2e}"


def report(rows: list[Row], args, started: str, wall: float) -> str:
    versions = {p: importlib.metadata.version(p) for p in ("torch", "lava-nc", "snntorch")}
    lines = [
        "# Simulation speed: Lava fixed_pt vs the exact reference simulator vs snnTorch",
        "",
        f"Written by `benchmarks/simulate.py` ({' '.join(sys.argv[1:]) or 'defaults'}) on {started}.",
        "",
        f"- device: {device_text(args.device)}",
        f"- torch {versions['torch']}, lava-nc {versions['lava-nc']} (Loihi2SimCfg fixed_pt, always on the "
        f"CPU), snntorch {versions['snntorch']}, Python {platform.python_version()}",
        f"- T = {args.steps} steps for every side; medians over {args.rounds} interleaved rounds "
        f"(Lava: one sample per round); whole run {wall / 60:.1f} min",
        "",
        "## Throughput",
        "",
        "samples·steps/s (higher is better). (a) Lava, one sample at a time (network build, compile and "
        "run, as `run_lava` does them); (b) reference, the whole batch at once, without recording; "
        "(b1) reference on one sample; (c) snnTorch float32 on the whole batch; (c64) the same in "
        "float64. b/a and b/c are throughput ratios.",
        "",
        "| network | neurons | synapses | batch | (a) Lava | (b) ref | (b) ref, recording | (b1) ref, 1 sample "
        "| (c) snnTorch f32 | (c64) snnTorch f64 | b/a | b1/a | b/c | b/c64 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lava = r.steps / statistics.median(r.lava_s) if r.lava_s else float("nan")
        tput = {side: (1 if side == "ref_1" else r.batch) * r.steps / r.median(side) for side in r.times}
        lines.append(
            f"| {r.name} | {r.neurons:,} | {r.synapses:,} | {r.batch} | {fmt(lava)} | {fmt(tput['ref'])} | "
            f"{fmt(tput['ref_record'])} | {fmt(tput['ref_1'])} | {fmt(tput['snntorch_f32'])} | "
            f"{fmt(tput['snntorch_f64'])} | {fmt(tput['ref'] / lava)} | {fmt(tput['ref_1'] / lava)} | "
            f"{tput['ref'] / tput['snntorch_f32']:.2f} | {tput['ref'] / tput['snntorch_f64']:.2f} |"
        )
    lines += [
        "",
        "## Synaptic events and the bit-for-bit check",
        "",
        "Synaptic events: spikes times the synapses each drives (structural connections, zero weights "
        "included), counted from the recorded reference run; per second of each side's median time. "
        "Check: `snncompile.sim.trace.compare` of the reference trace (spikes and v of every neuron, "
        "every step) and the readout against Lava on the samples Lava ran.",
        "",
        "| network | events / sample·step | (a) Lava events/s | (b) ref events/s | (c) snnTorch f32 events/s "
        "| Lava s/sample | ref s/batch | encode s/batch (host) | ref == Lava | compared | snnTorch argmax = ref |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        per = r.events_batch / (r.batch * r.steps)
        lava_ev = statistics.median([e / t for e, t in zip(r.events_lava, r.lava_s)]) if r.lava_s else float("nan")
        exact = "–" if not r.lava_s else ("bit-exact" if r.mismatches == 0 else f"**{r.mismatches} mismatches**")
        lines.append(
            f"| {r.name} | {per:,.0f} | {sci(lava_ev)} | {sci(r.events_batch / r.median('ref'))} | "
            f"{sci(r.events_batch / r.median('snntorch_f32'))} | "
            f"{fmt(statistics.median(r.lava_s)) if r.lava_s else '–'} | {r.median('ref'):.3f} | "
            f"{r.encode_s:.3f} | {exact} | {r.compared or '–'} | {100 * r.argmax_agree:.1f} % |"
        )
    family = [r for r in rows if r.name.startswith("wide CNN")]
    if len(family) > 1:
        base = family[0]
        lines += [
            "",
            "## Cost growth with network size (wide CNN family)",
            "",
            "Seconds per sample·step (median); growth relative to the smallest member.",
            "",
            "| network | neurons | synapses | (a) Lava | (b) ref | (c) snnTorch f32 | neurons × | "
            "Lava × | ref × | snnTorch × |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]

        def per_step(r: Row) -> tuple[float, float, float]:
            lava = statistics.median(r.lava_s) / r.steps if r.lava_s else float("nan")
            return lava, r.median("ref") / (r.batch * r.steps), r.median("snntorch_f32") / (r.batch * r.steps)

        b = per_step(base)
        for r in family:
            p = per_step(r)
            lines.append(
                f"| {r.name} | {r.neurons:,} | {r.synapses:,} | {sci(p[0])} | {sci(p[1])} | {sci(p[2])} | "
                f"{r.neurons / base.neurons:.1f} | {fmt(p[0] / b[0])} | {fmt(p[1] / b[1])} | {fmt(p[2] / b[2])} |"
            )
    lines += [
        "",
        "## Notes",
        "",
        "- (c) is not bit-exact and is not meant to be: float state, no one-step synaptic delay, "
        "snnTorch's reset order and no 24-bit limits. It runs the same layers, weights, thresholds "
        "and input currents, so it does the same amount of work.",
        "- The reference runs a synaptic sum in float32 where a static bound proves it exact (every "
        "partial sum an integer below 2**24), else in float64, never TF32 or bfloat16; IF layers whose "
        "bounds allow it hold their state in float32 too (`snncompile.sim.fixed`). Synaptic sums in "
        "float32: " + "; ".join(f"{r.name} {r.sum_types}" for r in rows) + ". snnTorch runs float32 "
        "by default; column (c64) shows it in float64.",
        "- The host-side input encoding (`encode_inputs`, one sample at a time in float64 so that it "
        "cannot depend on the batch) is shared by all sides and not in their times; its cost is listed.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default=fixed.default_device())
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per network")
    p.add_argument("--batch", type=int, default=360, help="digits samples per batch (360 = the test split)")
    p.add_argument("--wide-batch", type=int, default=16, help="samples per batch for the wide CNNs")
    p.add_argument("--sides", type=int, nargs="+", default=[16, 32, 64], help="image sides of the wide CNNs")
    p.add_argument("--lava-samples", type=int, default=3)
    p.add_argument("--lava-samples-wide", type=int, default=1, help="Lava samples for nets of >= 20k neurons")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "simulate.md")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.perf_counter()
    rows = []
    for net in networks(args):
        print(f"{net.name}: {neuron_count(net.graph):,} neurons, batch {len(net.x)}", flush=True)
        rows.append(measure(net, args))
    text = report(rows, args, started, time.perf_counter() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    if any(r.mismatches for r in rows):
        sys.exit("reference != Lava: see the table")


if __name__ == "__main__":
    main()
