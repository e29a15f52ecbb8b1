import numpy as np
import torch

from snncompile.ir import Conv2d, ReLU, chain, verify
from snncompile.passes.trim_taps import trim_taps, used_taps
from snncompile.sim.ann import forward


def test_used_taps_on_small_maps():
    conv = Conv2d(weight=np.ones((2, 1, 3, 3)), padding=1, groups=2)
    # 1×1 map, padding 1: the centre tap alone ever reads the input
    assert used_taps(conv, (1, 1), (1, 1)).tolist() == [[False] * 3, [False, True, False], [False] * 3]
    # 2×2 map: every tap reads some input from some output position
    assert used_taps(conv, (2, 2), (2, 2)).all()
    # stride 2 on 2×2 (one output): the taps at rows/columns 1 and 2
    strided = Conv2d(weight=np.ones((2, 1, 3, 3)), padding=1, stride=2, groups=2)
    assert used_taps(strided, (2, 2), (1, 1)).tolist() == [[False] * 3, [False, True, True], [False, True, True]]
    # dilation 2, padding 2 on 3×3: output o reads o − 2 + 2k, so k = 0 reads input 0 from output 2 and
    # k = 2 input 2 from output 0: every tap is used; on a 1×1 map the centre alone
    dilated = Conv2d(weight=np.ones((1, 1, 3, 3)), padding=2, dilation=2)
    assert used_taps(dilated, (3, 3), (3, 3)).all()
    assert used_taps(dilated, (1, 1), (1, 1)).sum() == 1


def test_trim_is_exact_and_only_touches_unused_taps():
    rng = np.random.default_rng(0)
    g = chain((4, 2, 2), [
        ("conv1", Conv2d(weight=rng.normal(size=(6, 4, 3, 3)), bias=rng.normal(size=6), padding=1, stride=2)),
        ("relu1", ReLU()),
        ("dw", Conv2d(weight=rng.normal(size=(6, 1, 3, 3)), bias=rng.normal(size=6), padding=1, groups=6)),
        ("relu2", ReLU()),
    ])
    after = trim_taps(g)
    verify(after)
    assert after.metadata["trimmed_taps"] == {"conv1": [4, 9], "dw": [1, 9]}
    w1, w2 = after.op("conv1").weight, after.op("dw").weight
    # the used taps unchanged, the others 0
    assert np.array_equal(w1[:, :, 1:, 1:], g.op("conv1").weight[:, :, 1:, 1:])
    assert not np.any(w1[:, :, 0, :]) and not np.any(w1[:, :, :, 0])
    assert np.array_equal(w2[:, :, 1, 1], g.op("dw").weight[:, :, 1, 1]) and np.count_nonzero(w2) == 6
    x = rng.normal(size=(32, 4, 2, 2))
    assert torch.equal(forward(g, x), forward(after, x))  # bit for bit: the trimmed taps only met zeros
    # a conv whose taps all read input is left as it is (the same graph back)
    big = chain((4, 8, 8), [("conv", Conv2d(weight=rng.normal(size=(2, 4, 3, 3)), padding=1))])
    assert trim_taps(big) is big


def test_bundled_mobilenetv2_keeps_the_depthwise_precision_its_unused_taps_took():
    """torchvision's MobileNetV2 on 32×32 inputs (examples/digits32_mobilenetv2.pt2): its last
    depthwise convolutions run on 1×1 (and 2×2) maps. The conversion zeroes their unused taps,
    exactly (the float SNN's output is bit-identical), and quantization then gives those layers
    up to several times the integer scale it gave them while an unused tap held their largest weight
    (on these 16 samples 4.8, 4.1 and 1.3 times on features_15, 16, 17; 9.7, 4.7 and 3.2 times on
    512 samples at T=16)."""
    from snncompile.api import load_model
    from snncompile.passes import pipeline
    from snncompile.passes.quantize import Quantize
    from tests.test_cli import ROOT
    from tests.zoo.models import digits32

    ann = load_model(ROOT / "examples" / "digits32_mobilenetv2.pt2")
    x = digits32()[0][:16]
    passes = pipeline.convert(x, mode="mse", steps=16)
    snn = pipeline.run(ann, passes)
    assert snn.metadata["trimmed_taps"] == {"features_14_conv_1_0": [4, 9], "features_15_conv_1_0": [1, 9],
                                            "features_16_conv_1_0": [1, 9], "features_17_conv_1_0": [1, 9]}
    # the same conversion with the taps kept: the pipeline without the pass (same thresholds)
    kept = pipeline.run(ann, tuple(p for p in passes if p is not trim_taps))
    assert "trimmed_taps" not in kept.metadata
    for name, op in snn.nodes():
        if name in snn.metadata["trimmed_taps"]:
            (src,) = snn.inputs(name)
            used = used_taps(op, snn.shape(src)[1:], snn.shape(name)[1:])
            assert np.array_equal(op.weight, np.where(used, kept.op(name).weight, 0.0))
        elif isinstance(op, Conv2d):
            assert np.array_equal(op.weight, kept.op(name).weight)
    from snncompile.sim import snn as float_snn
    assert np.array_equal(float_snn.predict(snn, x, 8, dtype=torch.float64),
                          float_snn.predict(kept, x, 8, dtype=torch.float64))
    scales = {g: Quantize(data=x, steps=16)(s).metadata["quantization"] for g, s in (("trim", snn), ("kept", kept))}
    for layer, at_least in (("features_15_conv_1_2", 4.0), ("features_16_conv_1_2", 3.0), ("features_17_conv_1_2", 1.2)):
        assert scales["trim"][layer]["scale"] >= at_least * scales["kept"][layer]["scale"], layer
