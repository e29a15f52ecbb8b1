"""The import hook that makes lava-nc 0.10 importable on Python 3.11+ (backends/lava/compat.py)."""

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from snncompile.backends.lava import compat

TINY_RUN = textwrap.dedent(
    """
    import numpy as np
    import snncompile.backends.lava  # installs the hook before anything imports lava
    import lava.magma.compiler.var_model as vm
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor

    assert vm.__file__.endswith("lava/magma/compiler/var_model.py"), vm.__file__
    src = LIF(shape=(2,), du=4095, dv=0, vth=3, bias_mant=np.array([100, 0]), bias_exp=0)
    syn = Dense(weights=np.array([[2, 0]]), num_message_bits=0)
    dst = LIF(shape=(1,), du=4095, dv=0, vth=1000, bias_mant=0, bias_exp=0)
    src.s_out.connect(syn.s_in)
    syn.a_out.connect(dst.a_in)
    monitor = Monitor()
    monitor.probe(dst.v, 4)
    try:
        src.run(condition=RunSteps(num_steps=4), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        print(monitor.get_data()[dst.name]["v"].ravel().astype(int).tolist())
    finally:
        src.stop()
    """
)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the mutable-default check is new in 3.11")
def test_plain_import_fails_on_this_python():
    result = _python("import lava.magma.compiler.var_model")
    assert result.returncode != 0
    assert "ValueError: mutable default" in result.stderr
    assert "ByteEncoder" in result.stderr


@pytest.mark.lava
def test_hook_makes_lava_import_and_run():
    result = _python(TINY_RUN)
    assert result.returncode == 0, result.stderr
    # src neuron 0 spikes at steps 1 and 3 (v = 100, 200 > 3 << 6 = 192); each spike reaches
    # dst one step later as 2 << 6 = 128.
    assert result.stdout.split("\n")[-2] == "[0, 0, 128, 128]"


def test_patch_source_rewrites_only_bytecoder_defaults():
    source = "    x: ByteEncoder = ByteEncoder()\n    y: int = 0\n    p: ByteEncoder =  ByteEncoder()\n"
    patched = compat.patch_source(source)
    assert patched.splitlines() == [
        "    x: ByteEncoder = __import__('dataclasses').field(default_factory=ByteEncoder)",
        "    y: int = 0",
        "    p: ByteEncoder = __import__('dataclasses').field(default_factory=ByteEncoder)",
    ]
    assert compat.patch_source(patched) == patched


def test_start_method_already_fork_no_longer_breaks_lava_import():
    preset = "import multiprocessing as mp; mp.set_start_method('fork'); "
    target = "import lava.magma.runtime.message_infrastructure.multiprocessing"
    plain = _python(preset + "import snncompile.backends.lava.compat as c; c.PATCHES.clear(); "
                    "c.PATCHES['lava.magma.compiler.var_model'] = c.patch_source; c.install(); " + target)
    assert plain.returncode != 0 and "context has already been set" in plain.stderr
    hooked = _python(preset + "import snncompile.backends.lava; " + target)
    assert hooked.returncode == 0, hooked.stderr


def test_patch_start_method():
    line = "    mp.set_start_method('fork')"
    assert compat.patch_start_method(line) == (
        "    (mp.get_start_method(allow_none=True) == 'fork' or mp.set_start_method('fork'))"
    )


def test_install_is_idempotent_and_fields_use_factories():
    compat.install()
    compat.install()
    assert sum(getattr(f, "snncompile_lava_hook", False) for f in sys.meta_path) == 1
    import lava.magma.compiler.var_model as vm

    assert vm.__spec__.origin == vm.__file__
    encoder_fields = [f for f in dataclasses.fields(vm.CoreEncoder)]
    assert encoder_fields and all(f.default_factory is vm.ByteEncoder for f in encoder_fields)
    assert vm.CoreEncoder().x is not vm.CoreEncoder().x  # one encoder per instance
