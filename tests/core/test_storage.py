"""Storage keys never leave the storage folder; a temp write over its limit keeps nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.storage import LimitExceeded, Storage, artifact_key, model_key


@pytest.mark.parametrize("key", ["../x", "models/../../x", "/etc/passwd", "models//x", "jobs/a/.hidden", ""])
def test_keys_that_escape_or_are_odd_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        Storage(tmp_path).path(key)


def test_generated_keys_resolve_inside_the_root(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    assert storage.path(model_key("ab" * 16)) == tmp_path / "models" / ("ab" * 16) / "upload.bin"
    assert storage.path(artifact_key("cd" * 16, "model.onnx")).parent.parent == tmp_path / "jobs"


def test_temp_write_commits_atomically_or_discards(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    temp = storage.temp_write(limit=10)
    temp.write(b"12345")
    path = storage.commit(temp, model_key("m1"))
    assert path.read_bytes() == b"12345" and list((tmp_path / "tmp").iterdir()) == []
    over = storage.temp_write(limit=4)
    with pytest.raises(LimitExceeded):
        over.write(b"12345")
    over.discard()
    assert list((tmp_path / "tmp").iterdir()) == []
