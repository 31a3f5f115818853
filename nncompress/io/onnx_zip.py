"""An ONNX model uploaded as a zip: the ``.onnx`` file and its external-data files side by side."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

from nncompress.errors import ModelLoadError

__all__ = ["ZIP_MEMBER_NAME", "extract_onnx_zip"]

# A member's last path component: a plain file name, never a path, so extraction cannot escape.
ZIP_MEMBER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}")


def extract_onnx_zip(path: Path, dest: Path) -> Path:
    """Writes the zip's one ``.onnx`` file and the other plain files beside it into ``dest``.

    Member names are never used as paths: each is reduced to its last component, which must be a
    plain name (:data:`ZIP_MEMBER_NAME`), and written under ``dest``; the service also refuses
    anything else at upload. Used by the job's loader and by the service's preflight.

    Returns:
        The path of the extracted ``.onnx`` file.

    Raises:
        ModelLoadError: not exactly one ``.onnx`` file, or a member with an unexpected name.
    """
    with zipfile.ZipFile(path) as archive:
        members = [i for i in archive.infolist() if not i.is_dir()]
        onnx_files = [i for i in members if i.filename.lower().endswith(".onnx")]
        if len(onnx_files) != 1:
            raise ModelLoadError(f"the zip holds {len(onnx_files)} .onnx files; expected one")
        for info in members:
            name = info.filename.rpartition("/")[2]
            if not ZIP_MEMBER_NAME.fullmatch(name):
                raise ModelLoadError(
                    f"zip member {info.filename!r} has an unexpected name", member=info.filename
                )
            with archive.open(info) as src, open(dest / name, "xb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
    return dest / onnx_files[0].filename.rpartition("/")[2]
