"""A client for the nncompress HTTP API, on httpx (sync) and httpx-sse.

An MLOps pipeline can upload, submit, follow, cancel and download without writing HTTP: uploads are
streamed from disk, :meth:`Client.wait` follows the job's event stream (polling a server without one,
and riding out a short outage), downloads are sha256-checked and resume a partial file.

Examples:
    >>> from nncompress.client import Client
    >>> c = Client("http://127.0.0.1:8000")                                     # doctest: +SKIP
    >>> model = c.upload_model("net.safetensors", architecture="mnist_net")     # doctest: +SKIP
    >>> job = c.create_job(model["id"], config_list=[{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}],
    ...                    idempotency_key="build-1234")                        # doctest: +SKIP
    >>> job = c.wait(job["id"], on_progress=lambda j: print(j["stage"], j["progress"]))  # doctest: +SKIP
    >>> c.download_artifact(job["id"], "model.safetensors", "out/")             # doctest: +SKIP
"""

from nncompress.client.api import TERMINAL_STATUSES, Client
from nncompress.client.errors import (
    ChecksumMismatch,
    ServiceError,
    ServiceUnreachable,
    StreamUnavailable,
    WaitTimeout,
)

__all__ = [
    "TERMINAL_STATUSES",
    "ChecksumMismatch",
    "Client",
    "ServiceError",
    "ServiceUnreachable",
    "StreamUnavailable",
    "WaitTimeout",
]
