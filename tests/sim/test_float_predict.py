"""sim.snn.predict: the float SNN over a whole split in bounded batches gives what one batch gives."""

from __future__ import annotations

import numpy as np
import torch

from snncompile.passes import pipeline
from snncompile.sim import snn as float_snn
from tests.builders import make_cnn


def test_batches_and_one_batch_agree(digits_image):
    x = digits_image.test.x[:50]
    snn = pipeline.run(make_cnn(), pipeline.convert(digits_image.train.x[:32]))
    whole = float_snn.simulate(snn, x, 20, delay=1).scores()
    (whole,) = whole.values()
    batched = float_snn.predict(snn, x, 20, batch_size=16, dtype=torch.float64)
    # float64, not the exact path: a batch of 16 and one of 50 may take different oneDNN kernels
    # (summation orders) on some CPUs, last-bit differences (7e-15 measured on one, 0 on another)
    np.testing.assert_allclose(batched, whole, rtol=1e-12, atol=1e-12)
    assert np.array_equal(batched.argmax(1), whole.argmax(1))
    # the default float32 path picks the same classes
    assert np.mean(float_snn.predict(snn, x, 20).argmax(1) == whole.argmax(1)) >= 0.98
