"""ImageFolder-style zips: ``<class>/<image>`` (optionally under one top folder), decoded in memory.

Classes are the folder names in sorted order (torchvision's convention). Every image must decode,
and all must share one size and one mode (``L`` → 1 channel, ``RGB`` → 3). macOS metadata
(``__MACOSX/``) and dot-files are skipped; anything else that is not an image is an error, so a
mistaken upload is reported rather than half-read. Needs Pillow, imported only here.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from nncompress.datasets.archive import ArchiveLimits, check_zip, read_member
from nncompress.datasets.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "read_image_folder_zip"]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
_MODES = {"L": 1, "RGB": 3}


def read_image_folder_zip(path: Path, limits: ArchiveLimits) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decodes an ImageFolder zip.

    Args:
        path: the zip.
        limits: archive and image limits.

    Returns:
        ``(x, y, class_names)``: uint8 images ``(N, H, W, C)``, int64 labels, sorted class names.

    Raises:
        DatasetError: an unsafe archive, a file outside a class folder, an image that does not decode
            or whose size/mode differs from the first one.
    """
    image_module = _pil()
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path.name} is not a valid zip file: {exc}", file=path.name) from exc
    with zf:
        entries = _class_entries(check_zip(zf, limits))
        classes = sorted({cls for cls, _ in entries})
        if not classes:
            raise DatasetError(
                "the archive holds no images; expected <class>/<image> entries", file=path.name
            )
        index = {c: i for i, c in enumerate(classes)}
        images: list[np.ndarray] = []
        labels: list[int] = []
        first: tuple[str, tuple[int, int], str] | None = None
        decoded = 0
        for cls, info in entries:
            array, size, mode = _decode(image_module, zf, info, limits)
            if first is None:
                first = (info.filename, size, mode)
            elif (size, mode) != first[1:]:
                raise DatasetError(
                    f"entry {info.filename!r} is {size[0]}x{size[1]} {mode}, but {first[0]!r} is "
                    f"{first[1][0]}x{first[1][1]} {first[2]}; all images must share one size and mode",
                    entry=info.filename,
                    expected=[*first[1], first[2]],
                    got=[*size, mode],
                )
            decoded += array.nbytes
            if decoded > limits.max_decoded_bytes:
                raise DatasetError(
                    f"decoded images exceed {limits.max_decoded_bytes} bytes",
                    entry=info.filename,
                    expected=limits.max_decoded_bytes,
                )
            images.append(array)
            labels.append(index[cls])
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetError("ImageFolder archives need Pillow: pip install pillow", expected="Pillow") from exc
    return Image


def _class_entries(infos: list[zipfile.ZipInfo]) -> list[tuple[str, zipfile.ZipInfo]]:
    files = []
    for info in infos:
        parts = PurePosixPath(info.filename).parts
        if parts[0] == "__MACOSX" or parts[-1].startswith("."):
            continue
        files.append((parts, info))
    # A zip of a folder wraps everything in that folder's name: strip one shared top level.
    tops = {parts[0] for parts, _ in files}
    if len(tops) == 1 and all(len(parts) >= 3 for parts, _ in files):
        files = [(parts[1:], info) for parts, info in files]
    out = []
    for parts, info in files:
        if len(parts) != 2:
            where = "outside any class folder" if len(parts) < 2 else "nested below a class folder"
            raise DatasetError(
                f"entry {info.filename!r} is {where}; expected <class>/<image>",
                entry=info.filename,
                expected="<class>/<image>",
            )
        if PurePosixPath(parts[1]).suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(
                f"entry {info.filename!r} is not an image (allowed: {', '.join(sorted(IMAGE_SUFFIXES))})",
                entry=info.filename,
                expected=sorted(IMAGE_SUFFIXES),
            )
        out.append((parts[0], info))
    return out


def _decode(
    image_module: Any, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits
) -> tuple[np.ndarray, tuple[int, int], str]:
    data = read_member(zf, info)
    try:
        with image_module.open(io.BytesIO(data)) as img:
            # The header gives the size before any pixel is decoded: refuse decompression bombs here.
            width, height = img.size
            if width * height > limits.max_image_pixels:
                raise DatasetError(
                    f"entry {info.filename!r} is {width}x{height}; at most {limits.max_image_pixels} pixels",
                    entry=info.filename,
                    expected=limits.max_image_pixels,
                    got=width * height,
                )
            img.load()
            mode = img.mode
            if mode not in _MODES:
                raise DatasetError(
                    f"entry {info.filename!r} has image mode {mode}; expected L (grayscale) or RGB",
                    entry=info.filename,
                    expected=sorted(_MODES),
                    got=mode,
                )
            array = np.asarray(img, dtype=np.uint8).reshape(height, width, _MODES[mode])
    except DatasetError:
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError...) for bad files
        raise DatasetError(
            f"entry {info.filename!r} does not decode as an image: {exc}", entry=info.filename
        ) from exc
    return array, (width, height), mode
