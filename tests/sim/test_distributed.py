"""The data-parallel accuracy sweep: two torchrun ranks (gloo, localhost) give the 1-process result."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from snncompile.sim.distributed import Accuracy, shard
from snncompile.report.sweep import evaluate_model

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "digits_mlp.pt2"
ARGS = ["--steps", "16", "--samples", "101", "--batch-size", "32", "--device", "cpu"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("n", [0, 1, 7, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_sample_once(n, world):
    covered = [i for rank in range(world) for i in range(n)[shard(n, rank, world)]]
    assert covered == list(range(n))


def test_two_ranks_equal_one_process_exactly():
    expected = evaluate_model(MODEL, 16, samples=101, batch_size=32, device="cpu")
    assert expected.total == 101 and 0 < expected.correct < 101
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if "lo" in {name for _, name in socket.if_nameindex()}:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo on the loopback interface
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "-m", "snncompile.report.sweep", str(MODEL), *ARGS,
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"accuracy \S+ \((\d+)/(\d+)\) steps 16 processes 2", done.stdout)
    assert found, done.stdout
    assert Accuracy(int(found[1]), int(found[2])) == expected
