"""``snncompile verify`` on damaged or hand-edited bundles and bad flags: one line, exit 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.security.helpers import MLP, assert_refused, run_cli


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "out"
    code, _, err = run_cli([MLP, "-o", out, "--steps", "4", "--samples", "2", "--calib-samples", "16",
                            "--no-progress", "-q"])
    assert code == 0, err
    return out


def _short_input(folder):
    arrays = dict(np.load(folder / "network.npz"))
    arrays["input/x"] = arrays["input/x"][:1]
    np.savez(folder / "network.npz", **arrays)


def _bad_encoders(folder):
    doc = json.loads((folder / "network.json").read_text())
    doc["encoders"] = 7
    (folder / "network.json").write_text(json.dumps(doc))


def _npz_bomb(folder):
    import zipfile

    with zipfile.ZipFile(folder / "network.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("input/x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False,
                                                          "shape": (1 << 28, 1)})
            member.write(bytes(1 << 20))


@pytest.mark.parametrize("damage, fragment", [(_short_input, "shape (1, 64)"), (_bad_encoders, "malformed"),
                                              (_npz_bomb, "declare")])
def test_damaged_bundles_are_one_line(bundle, tmp_path, damage, fragment):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    damage(copy)
    code, out, err = run_cli(["verify", copy, "--json"])
    assert_refused(code, err, None, fragment)
    assert json.loads(out)["exit_code"] == 2


def test_unknown_device_is_one_line(bundle):
    code, _, err = run_cli(["verify", bundle, "--device", "tpu"])
    assert_refused(code, err, None, "must be cpu, cuda or cuda:N")
