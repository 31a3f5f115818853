"""Service settings: one pydantic-settings class, read from ``NNCOMPRESS_*`` environment variables.

Obtain them through :func:`get_settings` (a FastAPI dependency); tests build ``Settings(...)`` and
override the dependency instead of patching the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    max_upload_bytes: int = Field(default=512 * MiB, gt=0)
    allow_pickle: bool = False
    lease_seconds: int = Field(default=60, gt=0)
    heartbeat_seconds: int = Field(default=10, gt=0)
    reconcile_interval_seconds: int = Field(default=15, gt=0)
    job_time_limit_seconds: int = Field(default=3600, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    visibility_timeout_seconds: int = Field(default=3600, gt=0)
    worker_concurrency: int = Field(default=1, ge=1)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="if set (comma-separated in NNCOMPRESS_API_KEYS), /v1 needs 'Authorization: Bearer <k>'",
    )
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

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        return [k.strip() for k in value.split(",") if k.strip()] if isinstance(value, str) else value

    @field_validator("api_keys")
    @classmethod
    def _no_placeholder_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key) < 16 or key.lower() in _PLACEHOLDERS:
                raise ValueError(
                    "API keys must be at least 16 characters and not a placeholder such as 'changeme'"
                )
        return keys

    @field_validator("broker_url")
    @classmethod
    def _empty_broker_is_embedded(cls, url: str | None) -> str | None:
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
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
