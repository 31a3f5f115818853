"""Start-up sweeps partial uploads (``storage/tmp/*.part``) that an earlier process left behind."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.storage import PROCESS_STARTED, Storage


def _part(folder: Path, name: str, mtime: float | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"half an upload")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_api_start_removes_parts_older_than_the_process(
    make_client: Callable[..., Any], make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings(storage_dir=tmp_path / "storage")
    tmp = tmp_path / "storage" / "tmp"
    stale = _part(tmp, "a" * 32 + ".part", PROCESS_STARTED - 3600)
    fresh = _part(tmp, "b" * 32 + ".part", None)  # being written now, by someone else
    other = _part(tmp, "notes.txt", PROCESS_STARTED - 3600)  # not ours to judge
    make_client(settings)
    assert not stale.exists()
    assert fresh.exists() and other.exists()


def test_sweep_counts_and_tolerates_a_missing_tmp_folder(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "nowhere")
    assert storage.sweep_partial_uploads() == 0
    for i in range(3):
        _part(tmp_path / "nowhere" / "tmp", f"{i}.part", 1000.0)
    assert storage.sweep_partial_uploads(before=2000.0) == 3
    assert list((tmp_path / "nowhere" / "tmp").iterdir()) == []
