"""The HTTP API of the nncompress service (FastAPI)."""
