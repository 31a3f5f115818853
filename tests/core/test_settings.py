"""Settings come from NNCOMPRESS_* or the plain DATABASE_URL/BROKER_URL names, and refuse nonsense."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings

ENV_NAMES = ("DATABASE_URL", "BROKER_URL", "STORAGE_DIR")


def test_defaults_are_embedded_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"NNCOMPRESS_{name}", raising=False)
    monkeypatch.delenv("NNCOMPRESS_MAX_UPLOAD_BYTES", raising=False)
    monkeypatch.delenv("NNCOMPRESS_ALLOW_PICKLE", raising=False)
    settings = Settings()
    assert settings.embedded and settings.is_sqlite
    assert settings.max_upload_bytes == 512 * 1024 * 1024 and settings.allow_pickle is False


def test_plain_and_prefixed_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NNCOMPRESS_DATABASE_URL", raising=False)
    monkeypatch.delenv("NNCOMPRESS_BROKER_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/nn")
    monkeypatch.setenv("BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("NNCOMPRESS_MAX_UPLOAD_BYTES", "1024")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u:p@db:5432/nn"
    assert (settings.broker_url, settings.embedded, settings.max_upload_bytes) == (
        "redis://redis:6379/0",
        False,
        1024,
    )
    monkeypatch.setenv("NNCOMPRESS_DATABASE_URL", "sqlite:///prefixed.db")
    assert Settings().database_url == "sqlite:///prefixed.db"


def test_empty_broker_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNCOMPRESS_BROKER_URL", "")
    assert Settings().embedded


def test_heartbeat_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValidationError, match="heartbeat_seconds"):
        Settings(lease_seconds=10, heartbeat_seconds=10)


def test_keys_are_optional_only_for_an_embedded_loopback_server() -> None:
    assert not Settings(api_host="127.0.0.1").keys_required
    assert not Settings(api_host="::1").keys_required
    assert not Settings(api_host="localhost").keys_required
    assert Settings(api_host="0.0.0.0").keys_required
    assert Settings(api_host="192.168.1.5").keys_required
    assert Settings(broker_url="redis://127.0.0.1:6379/0").keys_required  # distributed: always
    assert Settings(require_api_keys=True).keys_required


def test_api_key_pepper_refuses_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNCOMPRESS_API_KEY_PEPPER", "changeme")
    with pytest.raises(ValidationError, match="placeholder"):
        Settings()
