"""create_app's lifespan: embedded mode migrates a fresh SQLite file and runs the dispatcher."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import inspect

from app.main import create_app
from core.settings import Settings
from tests.conftest import RecordingDispatcher


def test_embedded_start_migrates_creates_storage_and_runs_the_dispatcher(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'fresh' / 'db.sqlite'}", storage_dir=tmp_path / "files"
    )
    dispatcher = RecordingDispatcher()
    app = create_app(settings, dispatcher=dispatcher)
    with TestClient(app) as client:
        assert dispatcher.started and not dispatcher.stopped
        assert client.get("/v1/jobs").json() == {"items": [], "next_cursor": None}
        assert {"models", "jobs", "job_events", "artifacts"} <= set(
            inspect(app.state.engine).get_table_names()
        )
        assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["jobs", "models", "tmp"]
    assert dispatcher.stopped


def test_distributed_mode_does_not_migrate(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        broker_url="redis://127.0.0.1:6379/0",
        storage_dir=tmp_path,
    )
    app = create_app(settings, dispatcher=RecordingDispatcher())
    with TestClient(app):
        assert inspect(app.state.engine).get_table_names() == []
