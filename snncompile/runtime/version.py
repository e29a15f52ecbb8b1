"""snncompile's version, in one place below everything that records it (report.json, model.nir,
model.net, ``snncompile --version``); the package root re-exports it as ``snncompile.__version__``."""

__version__ = "0.1.0"
