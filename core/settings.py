"""Service settings: one pydantic-settings class, read from ``NNCOMPRESS_*`` environment variables.

Obtain them through :func:`get_settings` (a FastAPI dependency); tests build ``Settings(...)`` and
override the dependency instead of patching the environment.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
_PLACEHOLDERS = frozenset({"changeme", "changethis", "secret", "password", "apikey", "api_key"})


def _env(name: str, *plain: str) -> AliasChoices:
    """Reads ``NNCOMPRESS_<NAME>`` first, then the given plain names; keywords use the field name."""
    return AliasChoices(f"NNCOMPRESS_{name.upper()}", *plain)


class Settings(BaseSettings):
    """Everything a deployment chooses; embedded mode is ``broker_url=None`` on SQLite."""

    model_config = SettingsConfigDict(env_prefix="NNCOMPRESS_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="sqlite:///./var/nncompress.db", validation_alias=_env("database_url", "DATABASE_URL")
    )
    broker_url: str | None = Field(default=None, validation_alias=_env("broker_url", "BROKER_URL"))
    storage_dir: Path = Field(
        default=Path("./var/storage"), validation_alias=_env("storage_dir", "STORAGE_DIR")
    )
    # Object storage (core.storage_s3); credentials and endpoint come from the standard AWS_* variables.
    storage_url: str | None = Field(
        default=None,
        description="s3://bucket/prefix: uploads, data sets and artifacts in an S3-compatible store "
        "instead of storage_dir",
    )
    cache_dir: Path = Field(
        default=Path("./var/cache"),
        description="with storage_url: this process's local copies of stored objects and its scratch files",
    )
    cache_max_bytes: int = Field(default=20 << 30, gt=0, description="bound of cache_dir's copies")
    s3_part_bytes: int = Field(
        default=8 * MiB, ge=5 * MiB, description="multipart upload part size (S3's minimum is 5 MiB)"
    )
    download_redirect_seconds: int = Field(
        default=0,
        ge=0,
        le=7 * 24 * 3600,
        description="with storage_url: artifact downloads answer 307 to a presigned URL valid this long; "
        "0: the API streams the file",
    )
    max_upload_bytes: int = Field(default=512 * MiB, gt=0)
    preflight_max_params: int = Field(
        default=150_000_000,
        gt=0,
        description="largest model (parameters) the API builds to preflight an HF folder or zipped ONNX",
    )
    allow_pickle: bool = False
    max_input_elements: int = Field(
        default=2**25, gt=0, description="largest example input (elements, batch included) a job may ask for"
    )
    max_batch_size: int = Field(default=1024, gt=0, description="largest batch: input, latency, fine-tuning")
    max_latency_runs: int = Field(default=1000, gt=0, description="timed runs per latency batch size")
    max_finetune_epochs: int = Field(default=100, gt=0, description="fine-tuning epochs per job")
    max_calibration_batches: int = Field(default=1000, gt=0, description="static quantization calibration")
    # Data set caps (nncompress.datasets.DatasetLimits), checked from headers before decoding, by the
    # API's streaming validation and by the job that loads the data; each part (file, val_file) alone.
    dataset_max_ratio: float = Field(
        default=200.0, gt=1, description="decoded/compressed size of a zip member, gzip file or image"
    )
    dataset_max_image_pixels: int = Field(default=2048 * 2048, gt=0, description="width x height of an image")
    dataset_max_samples: int = Field(default=1_000_000, gt=0, description="samples in one part")
    dataset_max_decoded_bytes: int = Field(
        default=2 << 30, gt=0, description="samples as float32 tensors (the total of all images or values)"
    )
    dataset_max_archive_entries: int = Field(
        default=64_000, gt=0, description="entries in a zip (the API holds its directory, ~0.5 KiB each)"
    )
    dataset_max_unpacked_bytes: int = Field(default=2 << 30, gt=0, description="a zip's members uncompressed")
    dataset_max_classes: int = Field(default=100_000, gt=0, description="classes (largest label + 1)")
    no_worker_seconds: int = Field(
        default=600,
        gt=0,
        description="a queued cuda job fails (no_worker) when no gpu worker heartbeated for this long",
    )
    lease_seconds: int = Field(default=60, gt=0)
    heartbeat_seconds: int = Field(default=10, gt=0)
    reconcile_interval_seconds: int = Field(default=15, gt=0)
    job_time_limit_seconds: int = Field(default=3600, gt=0)
    job_memory_mb: int = Field(
        default=8192,
        ge=0,
        description="memory a job's processes may hold (MiB, anonymous + shared PSS); past it the job "
        "fails with memory_limit; 0: no limit",
    )
    max_attempts: int = Field(default=3, ge=1)
    visibility_timeout_seconds: int = Field(default=3600, gt=0)
    worker_concurrency: int = Field(default=1, ge=1)
    require_api_keys: bool | None = Field(
        default=None,
        description="None: keys required unless embedded on a loopback host; true/false forces it",
    )
    api_key_pepper: str | None = Field(
        default=None, description="server-side secret mixed into API key hashes (HMAC-SHA256)"
    )
    tenant_max_concurrent_jobs: int = Field(default=10, ge=1, description="queued+running jobs per tenant")
    tenant_requests_per_minute: int = Field(default=600, ge=1, description="/v1 requests per tenant")
    principal_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="how long an API process reuses a resolved API key (a revoked key or changed tenant "
        "limit takes effect within this time); 0: look the key up on every request",
    )
    tenant_max_concurrent_uploads: int = Field(
        default=4, ge=1, description="uploads (models, data sets) in progress per tenant and API process"
    )
    upload_min_rate: int = Field(
        default=8192,
        ge=0,
        description="bytes/s a request body must average over the time spent waiting for it, once "
        "upload_grace_seconds of waiting have passed (408 below it); 0: no minimum",
    )
    upload_grace_seconds: float = Field(default=30.0, gt=0, description="waiting before the rate is judged")
    upload_idle_seconds: float = Field(
        default=30.0, gt=0, description="the longest wait for the next chunk of a request body (408 past it)"
    )
    webhook_allow_private: bool = False
    webhook_max_attempts: int = Field(default=6, ge=1)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_backoff_seconds: float = Field(default=2.0, gt=0, description="first retry delay; doubles")
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    # MLflow tracking (core/tracking): set, every job is logged as one run once it has ended.
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=_env("mlflow_tracking_uri", "MLFLOW_TRACKING_URI"),
        description="an MLflow tracking server (http://host:5000); each finished job logs a run there",
    )
    mlflow_experiment: str = Field(
        default="nncompress", min_length=1, max_length=256, description="the experiment of jobs naming none"
    )
    mlflow_max_attempts: int = Field(default=6, ge=1, description="attempts to log a job before giving up")
    mlflow_backoff_seconds: float = Field(default=2.0, gt=0, description="first retry delay; doubles")
    mlflow_timeout_seconds: int = Field(default=10, ge=1, description="one request to the tracking server")
    mlflow_poll_seconds: float = Field(default=1.0, gt=0)
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str) -> str:
        # DATABASE_URL as images and PaaS write it ("postgres://", "postgresql://") means psycopg 3 here.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @field_validator("api_key_pepper")
    @classmethod
    def _no_placeholder_pepper(cls, pepper: str | None) -> str | None:
        if pepper and (len(pepper) < 16 or pepper.lower() in _PLACEHOLDERS):
            raise ValueError("api_key_pepper must be at least 16 characters and not a placeholder")
        return pepper or None

    @field_validator("broker_url")
    @classmethod
    def _empty_broker_is_embedded(cls, url: str | None) -> str | None:
        return url or None

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _empty_tracking_is_off(cls, uri: str | None) -> str | None:
        return uri or None

    @field_validator("storage_url")
    @classmethod
    def _s3_url(cls, url: str | None) -> str | None:
        # A bucket name as S3 allows it (3-63 lowercase letters, digits, dots, hyphens); any prefix.
        if url and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", url):
            raise ValueError(f"storage_url must look like s3://bucket/prefix, got {url!r}")
        return url or None

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        # A lease that expires before the next heartbeat would hand a healthy job to a second worker.
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be below "
                f"lease_seconds ({self.lease_seconds})"
            )
        return self

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: API and a local worker run in one process."""
        return self.broker_url is None

    @property
    def keys_required(self) -> bool:
        """API keys are optional only for an embedded server that listens on loopback alone."""
        if self.require_api_keys is not None:
            return self.require_api_keys
        return not (self.embedded and is_loopback_host(self.api_host))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``); False for ``0.0.0.0``."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
