"""What a model file's loading needs beyond the file (``LoadOptions``), shared by the dispatcher
(``detect``) and the loaders it calls (``torch_files``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadOptions:
    """How to load formats that need more than the file.

    ``arch``: ``package.module:factory`` or ``path/to/file.py:factory``, a callable returning the
    nn.Module a state_dict fills (it imports that module or file: code the user names).
    ``trust_code`` (``--trust-code``): load files whose loading runs their own code, a whole pickled
    module or a TorchScript archive; ``trust_pickle`` is its older name (either one trusts).
    ``input_shape``: one sample's shape, for formats that do not record it
    (TorchScript, state_dict, pickled module); ``data``: the data spec it is guessed from.
    """

    arch: str | None = None
    trust_pickle: bool = False
    trust_code: bool = False
    input_shape: tuple[int, ...] | None = None
    data: str = "digits"
    nir_dt: float | None = None  # NIR: the file's step, over its metadata and producer (frontends/nir.py)
    nir_reset: str | None = None  # NIR: zero | subtract, where the file records no reset

    @property
    def trusted(self) -> bool:
        return self.trust_code or self.trust_pickle
