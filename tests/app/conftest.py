"""Fixtures of the API tests beyond tests/conftest.py: the S3-protocol server of the storage tests."""

from tests.s3_server import s3_bucket, s3_server

__all__ = ["s3_bucket", "s3_server"]
