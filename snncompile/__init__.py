"""snncompile: compile PyTorch models to spiking hardware (Intel Loihi 2 first)."""

__version__ = "0.1.0"
