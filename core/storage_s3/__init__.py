"""Object storage: :class:`core.storage.Storage`'s interface over an S3-compatible store (S3,
MinIO, Ceph, R2).

Chosen by ``NNCOMPRESS_STORAGE_URL=s3://bucket/prefix``; the endpoint, credentials and region are
boto3's standard ``AWS_*`` variables. Every key lives at ``<prefix>/<key>`` in the bucket.

The local folder (``cache_dir``) is no store of record here, only this process's working space:

- ``tmp/``: an upload's scratch copy, which intake reads (safetensors headers, zip central
  directories, the data set loaders need random access), and downloads in flight;
- ``work/<job_id>/``: a job's artifacts while it runs, published to the store when it succeeds
  and then deleted;
- ``models/``, ``datasets/``, ``jobs/``: copies of stored objects fetched to be read, kept
  least-recently-used first within ``cache_max_bytes``.

An upload streams into a multipart upload as it arrives (parts of ``s3_part_bytes``, at most
:data:`PARTS_IN_FLIGHT` waiting in memory), hashed on the way. The object key is only known once
intake accepted the file, so the parts go to a staging key under ``tmp/`` that the commit copies
server-side; a refusal or a 413 aborts the multipart upload, and nothing is left in the bucket.

One module per part: :mod:`~core.storage_s3.client` (the boto3 client, URLs, error mapping),
:mod:`~core.storage_s3.uploads` (multipart uploads and the sweep of stale ones),
:mod:`~core.storage_s3.cache` (the local read cache and its bound), :mod:`~core.storage_s3.storage`
(the :class:`S3Storage` that puts them together).
"""

from __future__ import annotations

from core.storage_s3.client import make_client, parse_s3_url, s3_errors
from core.storage_s3.storage import S3Storage
from core.storage_s3.uploads import PARTS_IN_FLIGHT, STALE_UPLOAD_SECONDS, S3TempWrite

__all__ = [
    "PARTS_IN_FLIGHT",
    "STALE_UPLOAD_SECONDS",
    "S3Storage",
    "S3TempWrite",
    "make_client",
    "parse_s3_url",
    "s3_errors",
]
