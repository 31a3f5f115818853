"""Architectures the engine knows by name, and the models the project defines for demos and tests."""

from nncompress.models.registry import Architecture, get, names, register

__all__ = ["Architecture", "get", "names", "register"]
