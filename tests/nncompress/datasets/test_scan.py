"""scan_dataset, the API's streaming validation, agrees with load_dataset: the same summary for
good files, the same error (type and message) for bad ones, and caps refused from headers."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nncompress.datasets import DatasetError, DatasetLimits, load_dataset, scan_dataset

PIL = pytest.importorskip("PIL.Image")


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    PIL.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _idx(path: Path, array: np.ndarray) -> Path:
    code = {np.dtype("uint8"): 0x08, np.dtype(">f4"): 0x0D}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))
    return path


def _files(tmp_path: Path, kind: str) -> tuple[Path, Path | None]:
    rng = np.random.default_rng(0)
    if kind == "npz_nhwc":
        path = tmp_path / "d.npz"
        np.savez_compressed(path, x=rng.integers(0, 256, (9, 5, 5, 3), dtype=np.uint8), y=np.arange(9) % 4)
        return path, None
    if kind == "npz_fortran_float":
        path = tmp_path / "d.npz"
        np.savez(path, x=np.asfortranarray(rng.random((7, 3, 4), dtype=np.float32)), y=np.arange(7.0) % 2)
        return path, None
    if kind == "idx":
        images = _idx(tmp_path / "i.gz", rng.integers(0, 256, (6, 4, 4), dtype=np.uint8))
        return images, _idx(tmp_path / "l.gz", np.array([0, 1, 2, 2, 1, 5], dtype=np.uint8))
    path = tmp_path / "f.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(5):
            zf.writestr(
                f"top/{'cat' if i % 2 else 'dog'}/{i}.png",
                _png(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), "RGB"),
            )
    return path, None


@pytest.mark.parametrize("kind", ["npz_nhwc", "npz_fortran_float", "idx", "imagefolder"])
def test_scan_summarises_as_the_loaded_data_set_describes(tmp_path: Path, kind: str) -> None:
    path, labels = _files(tmp_path, kind)
    assert (
        scan_dataset(path, labels_path=labels).describe() == load_dataset(path, labels_path=labels).describe()
    )


def _bad_npz(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (np.zeros((4, 2, 2)), np.array([0, 1, 2])),
        (np.array([[0.0, 1.0], [np.inf, 2.0]]), np.array([0, 1])),
        (np.zeros((3, 2)), np.array([0, -1, 1])),
        (np.zeros((3, 2)), np.array([0.0, 1.5, 1.0])),
        (np.zeros((2, 2)), np.array(["a", "b"])),
        (np.zeros((2, 2), dtype=np.complex64), np.array([0, 1])),
        (np.zeros((2, 3)), np.zeros((2, 3))),
        (np.zeros(3), np.zeros(3, dtype=int)),
        (np.zeros((0, 2)), np.zeros(0, dtype=int)),
    ],
)
def test_scan_refuses_what_the_loader_refuses_with_its_message(
    tmp_path: Path, x: np.ndarray, y: np.ndarray
) -> None:
    path = _bad_npz(tmp_path, x, y)
    with pytest.raises(DatasetError) as loaded:
        load_dataset(path)
    with pytest.raises(DatasetError) as scanned:
        scan_dataset(path)
    assert (scanned.value.code, scanned.value.message) == (loaded.value.code, loaded.value.message)


def test_a_nan_past_the_first_chunk_is_found_at_its_index(tmp_path: Path) -> None:
    x = np.zeros((3, 400, 400), dtype=np.float32)  # 1.9 MB: two chunks
    x[2, 399, 7] = np.nan
    path = _bad_npz(tmp_path, x, np.zeros(3, dtype=int))
    with pytest.raises(DatasetError, match=r"x\[2, 399, 7\] is nan"):
        scan_dataset(path)


def test_normalize_channels_are_checked_without_loading(tmp_path: Path) -> None:
    path, _ = _files(tmp_path, "npz_nhwc")
    with pytest.raises(DatasetError, match="normalize has 2 mean"):
        scan_dataset(path, normalize=([0.5, 0.5], [0.2, 0.2]))


def test_an_npy_header_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros((4, 2), np.uint8))
    data = buffer.getvalue().replace(b"(4, 2)", b"(9, 2)")
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", data)
        zf.writestr("y.npy", buffer.getvalue())
    with pytest.raises(DatasetError, match="declares \\[9, 2\\]"):
        scan_dataset(path)


def test_an_archive_that_hides_entries_from_its_declared_count_is_refused_before_zipfile(
    tmp_path: Path,
) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(20):
            zf.writestr(f"a/{i}.png", b"")
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", data, end + 8, 1, 1)  # the record now declares one entry
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="dataset_max_archive_entries") as info:
        scan_dataset(path, limits=DatasetLimits(max_archive_entries=10))
    assert info.value.code == "dataset_max_archive_entries_exceeded"


@pytest.mark.parametrize(("shape", "dtype"), [("(0, -5)", "<f4"), ("(2, 2)", "|S0")])
def test_npy_headers_numpy_reads_but_nothing_can_hold_are_refused(
    tmp_path: Path, shape: str, dtype: str
) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros((1, 1), np.float32))
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".ljust(117) + "\n"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", data)
        zf.writestr("y.npy", buffer.getvalue())
    for read in (scan_dataset, load_dataset):
        with pytest.raises(DatasetError, match=r"not a valid \.npy array"):
            read(path)


@pytest.mark.parametrize("name", ["", "."])
def test_an_entry_without_a_name_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "f.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/0.png", _png(np.zeros((4, 4), np.uint8), "L"))
        zf.writestr(zipfile.ZipInfo(name), b"x")
    for read in (scan_dataset, load_dataset):
        with pytest.raises(DatasetError, match="has no name"):
            read(path)
