"""snncompile: compile PyTorch models to spiking hardware (Intel Loihi 2 first)."""

from __future__ import annotations

from snncompile.runtime.version import __version__  # noqa: F401  (snncompile.__version__)

_DIGITS_SHAPES = ((1, 8, 8), (64,))  # scikit-learn's digits as an image, or flat


def compile(model, target: str = "loihi2", data: str = "digits", outdir=None, **options):
    """Compile ``model`` for ``target`` and check it on ``data``; returns ``api.Compiled``.

    ``model``: a ``torch.nn.Module`` (exported here with ``torch.export`` on one example sample
    whose shape comes from ``data``: the ``x`` of a .npz, or for ``digits`` whichever of (1, 8, 8)
    and (64,) the module accepts; ``input_shape=`` overrides), a model file path, or an IR Graph.
    ``outdir``: where model.nir and the reports go (default: a new temporary folder, see
    ``result.files``). Other keywords are ``api.Options`` fields (``steps=16``,
    ``sweep_steps=(4, 8, 16)``, ...). Errors derive from ``snncompile.errors.SnnCompileError``.

    >>> result = snncompile.compile(net, target="loihi2", data="digits", steps=16)  # doctest: +SKIP
    >>> print(result.report.summary())  # doctest: +SKIP
    """
    import tempfile

    import torch

    from snncompile import compiler

    opts = compiler.Options(target=target, data=data, **options)
    if isinstance(model, torch.nn.Module):
        from snncompile.frontends.torch import from_module

        model = from_module(model, _example_input(model, data, options.get("input_shape")))
    if outdir is None:
        outdir = tempfile.mkdtemp(prefix="snncompile-")
    return compiler.compile_model(model, outdir, opts)


def _example_input(module, data: str, input_shape=None):
    """One zero sample (batch of 1) of the shape the data has and the module accepts."""
    from pathlib import Path

    import numpy as np
    import torch

    from snncompile.errors import DataError

    if input_shape is not None:
        shapes = (tuple(input_shape),)
    elif data == "digits":
        shapes = _DIGITS_SHAPES
    else:
        path = Path(data)
        if not path.is_file():
            raise DataError(f"{data}: data file not found")
        with np.load(path) as arrays:
            if "x" not in arrays:
                raise DataError(f"{data}: no 'x' array")
            shapes = (tuple(arrays["x"].shape[1:]),)
    failures = []
    modes = {m: m.training for m in module.modules()}
    try:
        for shape in shapes:
            example = torch.zeros((1, *shape))
            try:
                with torch.no_grad():
                    module.eval()(example)
            except Exception as exc:  # any error: the module does not take this shape
                failures.append(f"{shape}: {type(exc).__name__}")
                continue
            return example
    finally:
        for m, training in modes.items():
            m.training = training
    raise DataError(f"the module accepts no sample shape of data '{data}' ({'; '.join(failures)}); "
                    "give input_shape=")
