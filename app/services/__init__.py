"""Service functions: take keyword arguments, do the work, raise domain errors (core.errors)."""
