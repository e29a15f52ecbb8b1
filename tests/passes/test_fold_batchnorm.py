import numpy as np
import torch

from snncompile.ir import BatchNorm, Dense, ReLU, chain, verify
from snncompile.passes.fold_batchnorm import check, fold_batchnorm
from snncompile.sim.ann import forward
from tests.builders import make_cnn


def test_fold_removes_every_batchnorm_and_keeps_outputs(digits_image):
    before = make_cnn(seed=3, bn=True)
    after = fold_batchnorm(before)
    # how many rewrites: both BatchNorms gone
    assert len(before.find(BatchNorm)) == 2 and after.find(BatchNorm) == []
    # the new structure
    assert [k for _, k, _ in after.structure()] == [
        "Input", "Conv2d", "ReLU", "Conv2d", "ReLU", "AvgPool2d", "Flatten", "Dense", "Output"]
    assert after.inputs("relu1") == ["conv1"] and after.inputs("relu2") == ["conv2"]
    # numbers: equal to the unfolded model
    x = digits_image.test.x[:64]
    a, b = forward(before, x), forward(after, x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
    # still a valid graph
    verify(after)


def test_batchnorm_after_relu_is_not_folded():
    rng = np.random.default_rng(0)
    bn = BatchNorm(mean=np.zeros(4), var=np.ones(4), gamma=rng.uniform(1, 2, 4), beta=np.ones(4))
    g = chain((3,), [("fc", Dense(weight=rng.normal(size=(4, 3)))), ("relu", ReLU()), ("bn", bn)])
    assert "ReLU" in check(g, "bn")
    after = fold_batchnorm(g)
    assert after.find(BatchNorm) == ["bn"]
    assert after.structure() == g.structure()
