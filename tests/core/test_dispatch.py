"""The API finds the workers' dispatchers by name (entry points), never by importing the workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core import dispatch
from core.db.session import make_engine, make_session_factory


def _factory(url: str) -> Callable[[], Session]:
    return make_session_factory(make_engine(url))


def test_embedded_settings_get_the_workers_thread_pool(make_settings: Callable[..., Any]) -> None:
    settings = make_settings()
    built = dispatch.make_dispatcher(settings, _factory(settings.database_url))
    assert dispatch.dispatcher_name(settings) == "embedded"
    assert type(built).__module__ == "workers.dispatch"
    assert type(built).__name__ == "EmbeddedDispatcher"


def test_a_broker_gets_the_celery_publisher(make_settings: Callable[..., Any]) -> None:
    settings = make_settings(broker_url="redis://127.0.0.1:6379/15")
    built = dispatch.make_dispatcher(settings, _factory(settings.database_url))
    try:
        assert type(built).__name__ == "CeleryDispatcher"
    finally:
        built.stop()  # closes the broker pool; nothing was published


def test_no_registered_dispatcher_is_a_clear_error(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "DISPATCHER_GROUP", "nncompress.no-such-group")
    settings = make_settings()
    with pytest.raises(RuntimeError, match=r"no 'embedded' dispatcher .*pip install -e"):
        dispatch.make_dispatcher(settings, _factory(settings.database_url))
