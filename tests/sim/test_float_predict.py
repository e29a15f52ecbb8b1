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
    np.testing.assert_array_equal(batched, whole)
    # the default float32 path picks the same classes
    assert np.mean(float_snn.predict(snn, x, 20).argmax(1) == whole.argmax(1)) >= 0.98
