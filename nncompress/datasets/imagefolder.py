"""ImageFolder-style zips: ``<class>/<image>`` (optionally under one top folder), decoded one image
at a time.

Classes are the folder names in sorted order (torchvision's convention). Every image must decode,
and all must share one size and one mode (``L`` → 1 channel, ``RGB`` → 3). macOS metadata
(``__MACOSX/``) and dot-files are skipped; anything else that is not an image is an error, so a
mistaken upload is reported rather than half-read. Needs Pillow, imported only here.

Decoding is bounded by headers: each image is opened from its zip member as a stream, and its
header (size, mode) is checked against the limits (pixels, ratio of pixels to the member's
compressed size) before its pixels are decoded; the first image's header, times the number of
images, gives the decoded size of the whole set, checked before any image is decoded. Pillow opens
only the formats the file suffixes name (no EPS, which would run Ghostscript). Pillow's own
decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) still applies above our cap and is reported
as the same limit.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import IO, Any

import numpy as np

from nncompress.datasets.archive import open_member
from nncompress.datasets.errors import DatasetError, DatasetLimitError
from nncompress.datasets.limits import FLOAT_BYTES, DatasetLimits

__all__ = ["IMAGE_SUFFIXES", "class_entries", "decoded_images", "read_images"]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
# The Pillow formats those suffixes name; no other decoder is ever tried on an upload.
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
_MODES = {"L": 1, "RGB": 3}


def class_entries(files: list[zipfile.ZipInfo]) -> tuple[list[str], list[tuple[int, zipfile.ZipInfo]]]:
    """The class names (sorted folder names) and the images as ``(label, entry)``, in archive order.

    Raises:
        DatasetError: a file outside a class folder or nested below one, a file that is not an
            image, or no image at all.
    """
    kept = []
    for info in files:
        parts = PurePosixPath(info.filename).parts
        if parts[0] == "__MACOSX" or parts[-1].startswith("."):
            continue
        kept.append((parts, info))
    # A zip of a folder wraps everything in that folder's name: strip one shared top level.
    tops = {parts[0] for parts, _ in kept}
    if len(tops) == 1 and all(len(parts) >= 3 for parts, _ in kept):
        kept = [(parts[1:], info) for parts, info in kept]
    named = []
    for parts, info in kept:
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
        named.append((parts[0], info))
    classes = sorted({cls for cls, _ in named})
    if not classes:
        raise DatasetError("the archive holds no images; expected <class>/<image> entries")
    index = {c: i for i, c in enumerate(classes)}
    return classes, [(index[cls], info) for cls, info in named]


def decoded_images(
    zf: zipfile.ZipFile, entries: list[tuple[int, zipfile.ZipInfo]], limits: DatasetLimits
) -> Iterator[tuple[int, Any]]:
    """Decodes the images one at a time, each checked by its header first.

    Yields:
        ``(position, image)``: a loaded Pillow image, valid until the next item.

    Raises:
        DatasetError: an image that does not decode, or whose size/mode differs from the first
            one; :class:`DatasetLimitError` for the samples, pixels, ratio or decoded-bytes caps.
    """
    image_module = _pil()
    limits.check("max_samples", len(entries), "the number of images in the archive")
    first: tuple[str, tuple[int, int], str] | None = None
    for position, (_, info) in enumerate(entries):
        with open_member(zf, info) as stream, _opened(image_module, stream, info, limits) as img:
            size, mode = img.size, img.mode
            if first is None:
                first = (info.filename, size, mode)
                values = size[0] * size[1] * _MODES[mode]
                limits.check(
                    "max_decoded_bytes",
                    len(entries) * values * FLOAT_BYTES,
                    f"{len(entries)} images of {size[0]}x{size[1]} {mode} as float32",
                )
            elif (size, mode) != first[1:]:
                raise DatasetError(
                    f"entry {info.filename!r} is {size[0]}x{size[1]} {mode}, but {first[0]!r} is "
                    f"{first[1][0]}x{first[1][1]} {first[2]}; all images must share one size and mode",
                    entry=info.filename,
                    expected=[*first[1], first[2]],
                    got=[*size, mode],
                )
            _decode(img, info)
            yield position, img


def read_images(
    zf: zipfile.ZipFile, entries: list[tuple[int, zipfile.ZipInfo]], limits: DatasetLimits
) -> np.ndarray:
    """All images as one uint8 array ``(N, H, W, C)``, allocated once the first header is checked."""
    out: np.ndarray | None = None
    for position, img in decoded_images(zf, entries, limits):
        width, height = img.size
        if out is None:
            out = np.empty((len(entries), height, width, _MODES[img.mode]), dtype=np.uint8)
        out[position] = np.asarray(img, dtype=np.uint8).reshape(out.shape[1:])
    assert out is not None  # class_entries refuses an archive without images
    return out


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetError("ImageFolder archives need Pillow: pip install pillow", expected="Pillow") from exc
    return Image


@contextmanager
def _opened(
    image_module: Any, stream: IO[bytes], info: zipfile.ZipInfo, limits: DatasetLimits
) -> Iterator[Any]:
    """An image opened from a stream (its header only), its mode, pixels and ratio checked."""
    name = info.filename
    try:
        img = image_module.open(stream, formats=_PIL_FORMATS)
    except image_module.DecompressionBombError as exc:
        # Pillow's guard fires inside open(), before the size is ours to check: over twice its
        # MAX_IMAGE_PIXELS, which only a cap raised above Pillow's lets through.
        raise DatasetLimitError(
            f"entry {name!r} is too large an image for Pillow ({exc})",
            limit="max_image_pixels",
            maximum=limits.max_image_pixels,
            entry=name,
        ) from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError...)
        raise DatasetError(f"entry {name!r} does not decode as an image: {exc}", entry=name) from exc
    with img:
        width, height = img.size
        limits.check(
            "max_image_pixels", width * height, f"entry {name!r} of {width}x{height} pixels", entry=name
        )
        if img.mode not in _MODES:
            raise DatasetError(
                f"entry {name!r} has image mode {img.mode}; expected L (grayscale) or RGB",
                entry=name,
                expected=sorted(_MODES),
                got=img.mode,
            )
        limits.check_ratio(
            width * height * _MODES[img.mode], info.compress_size, f"entry {name!r}", entry=name
        )
        yield img


def _decode(img: Any, info: zipfile.ZipInfo) -> None:
    try:
        img.load()
    except Exception as exc:  # truncated or corrupt pixel data
        raise DatasetError(
            f"entry {info.filename!r} does not decode as an image: {exc}", entry=info.filename
        ) from exc
