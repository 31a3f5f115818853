"""Loading each format, good and malformed: the error names the array, the index or the entry."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nncompress.datasets import (
    DatasetError,
    DatasetLimitError,
    DatasetLimits,
    detect_format,
    from_arrays,
    load_dataset,
    load_mnist_idx,
)

PIL = pytest.importorskip("PIL.Image")


def _images(n: int = 12, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), np.arange(n) % 3


def _idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
    code = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    PIL.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _folder_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _gray(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


# -- npz ----------------------------------------------------------------------------------------


def test_npz_loads_scaled_nchw_and_describes(tmp_path: Path) -> None:
    x, y = _images()
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=x, y=y)
    ds = load_dataset(path, num_classes=3, input_shape=(1, 1, 8, 8))
    assert ds.x.shape == (12, 1, 8, 8) and ds.x.dtype == torch.float32
    assert torch.equal(ds.x[:, 0], torch.from_numpy(x).float() / 255)
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == y.tolist()
    info = ds.describe()
    assert info["format"] == "npz" and info["samples"] == 12 and info["num_classes"] == 3
    assert info["sample_shape"] == [1, 8, 8] and info["class_counts"] == [4, 4, 4]
    assert info["source_bytes"] == path.stat().st_size and len(info["sha256"]) == 64


def test_npz_channels_last_and_normalize(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((6, 5, 5, 3)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.zeros(6, dtype=np.int64))
    ds = load_dataset(path, normalize=([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))
    assert ds.sample_shape == (3, 5, 5)
    assert torch.allclose(ds.x, (torch.from_numpy(x).permute(0, 3, 1, 2) - 0.5) / 0.25)


def test_npz_accepts_shipped_subset_names(tmp_path: Path) -> None:
    x, y = _images()
    path = tmp_path / "d.npz"
    np.savez(path, images=x, labels=y.astype(np.uint8))
    assert len(load_dataset(path)) == 12


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        (np.zeros((4, 2, 2)), np.array([0, 1, 2]), ["x has 4 samples", "y has 3 labels"]),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), np.array([0, 1]), ["x[0, 1]", "nan"]),
        (np.array([[0.0, 1.0], [np.inf, 2.0]]), np.array([0, 1]), ["x[1, 0]", "inf"]),
        (np.zeros((3, 2)), np.array([0, 1, 10]), ["y[2] = 10", "[0, 5)"]),
        (np.zeros((3, 2)), np.array([0, -1, 1]), ["y[1] = -1"]),
        (np.zeros((3, 2)), np.array([0.0, 1.5, 1.0]), ["y[1] = 1.5", "not an integer"]),
        (np.zeros((2, 2)), np.array(["a", "b"]), ["y has dtype <U1"]),
        (np.array([["a", "b"]]), np.array([0]), ["x has dtype <U1"]),
        (np.zeros((2, 2), dtype=np.complex64), np.array([0, 1]), ["x has dtype complex64"]),
        (np.zeros((2, 3)), np.zeros((2, 3)), ["y has shape [2, 3]", "one-hot"]),
        (np.zeros(3), np.zeros(3, dtype=int), ["x has shape [3]"]),
    ],
)
def test_npz_malformed_arrays_say_what_and_where(
    tmp_path: Path, x: np.ndarray, y: np.ndarray, words: list[str]
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(DatasetError) as info:
        load_dataset(path, num_classes=5)
    assert info.value.code == "invalid_dataset"
    for word in words:
        assert word in info.value.message, info.value.message


def test_npz_ragged_object_array_is_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "ragged.npz"
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros(3), np.zeros(4)
    np.savez(path, x=ragged, y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="x is an object array"):
        load_dataset(path)


def test_npz_missing_arrays_lists_what_it_found(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, data=np.zeros((2, 2)), target=np.zeros(2))
    with pytest.raises(DatasetError, match="found: data, target"):
        load_dataset(path)


def test_wrong_channel_count_for_model(tmp_path: Path) -> None:
    path = tmp_path / "rgb.npz"
    np.savez(path, x=np.zeros((4, 3, 8, 8), dtype=np.float32), y=np.zeros(4, dtype=np.int64))
    with pytest.raises(DatasetError) as info:
        load_dataset(path, input_shape=(1, 8, 8))
    assert "3 channel(s) but the model expects 1" in info.value.message
    assert info.value.context["expected"] == 1 and info.value.context["got"] == 3


def test_wrong_spatial_size_for_model() -> None:
    with pytest.raises(DatasetError, match=r"shape \[1, 8, 8\] but the model takes \[1, 28, 28\]"):
        from_arrays(np.zeros((2, 8, 8), dtype=np.uint8), np.array([0, 1]), input_shape=(1, 1, 28, 28))


# -- idx ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_pair_gzip_or_raw(tmp_path: Path, compress: bool) -> None:
    x, y = _images(n=7, size=6)
    images = _idx(tmp_path / "img.idx", x, compress=compress)
    labels = _idx(tmp_path / "lbl.idx", y.astype(np.uint8), compress=compress)
    ds = load_dataset(images, labels_path=labels, num_classes=10, input_shape=(1, 6, 6))
    assert ds.source_format == "mnist_idx" and ds.sample_shape == (1, 6, 6)
    assert ds.y.tolist() == y.tolist()
    assert torch.equal(ds.x[:, 0], torch.from_numpy(x).float() / 255)
    again = load_mnist_idx(images, labels)
    assert again.sha256 == ds.sha256 and again.source_bytes == images.stat().st_size + labels.stat().st_size


def test_idx_truncated_and_mismatched(tmp_path: Path) -> None:
    x, y = _images(n=5, size=4)
    images = _idx(tmp_path / "img.idx", x, compress=False)
    images.write_bytes(images.read_bytes()[:-3])
    labels = _idx(tmp_path / "lbl.idx", y.astype(np.uint8), compress=True)
    with pytest.raises(
        DatasetError, match=r"header declares \[5, 4, 4\] \(80 bytes of data\) but the file holds 77"
    ):
        load_mnist_idx(images, labels)
    images = _idx(tmp_path / "img.idx", x, compress=True)
    labels = _idx(tmp_path / "lbl.idx", np.arange(4, dtype=np.uint8), compress=True)
    with pytest.raises(DatasetError, match="x has 5 samples but y has 4 labels"):
        load_mnist_idx(images, labels)


def test_idx_gzip_bomb_is_capped(tmp_path: Path) -> None:
    images = _idx(tmp_path / "img.idx.gz", np.zeros((100, 128, 128), dtype=np.uint8), compress=True)
    labels = _idx(tmp_path / "lbl.idx.gz", np.zeros(100, dtype=np.uint8), compress=True)
    with pytest.raises(DatasetLimitError, match=r"exceeds dataset_max_decoded_bytes \(6,553,600 > 10,000\)"):
        load_mnist_idx(images, labels, limits=DatasetLimits(max_decoded_bytes=10_000))
    with pytest.raises(DatasetLimitError, match=r"expands \d+x .*\(dataset_max_ratio") as info:
        load_mnist_idx(images, labels)  # 1.6 MB of zeros gzip to 2 KB
    assert info.value.code == "dataset_max_ratio_exceeded"


def test_single_idx_file_asks_for_labels(tmp_path: Path) -> None:
    images = _idx(tmp_path / "img.idx", _images()[0], compress=True)
    with pytest.raises(DatasetError, match="labels file together"):
        detect_format(images)


# -- ImageFolder zip ----------------------------------------------------------------------------


def test_image_folder_zip_classes_sorted_and_wrapper_stripped(tmp_path: Path) -> None:
    files = {
        f"root/{cls}/{i}.png": _png(_gray(10 * c + i), "L")
        for c, cls in enumerate(["dog", "cat"])
        for i in range(3)
    }
    files["root/.DS_Store"] = b"junk"
    files["__MACOSX/root/._x.png"] = b"junk"
    path = _folder_zip(tmp_path / "f.zip", files)
    assert detect_format(path) == "imagefolder_zip"
    ds = load_dataset(path, input_shape=(1, 8, 8))
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert ds.sample_shape == (1, 8, 8) and ds.y.tolist() == [1, 1, 1, 0, 0, 0]
    assert torch.equal(ds.x[3, 0], torch.from_numpy(_gray(10)).float() / 255)  # cat/0.png


def test_image_folder_rgb(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = _folder_zip(tmp_path / "f.zip", {"a/0.png": _png(rgb, "RGB"), "b/0.png": _png(rgb, "RGB")})
    ds = load_dataset(path)
    assert ds.sample_shape == (3, 5, 7)
    assert torch.equal(ds.x[0], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({"a/0.png": "gray8", "b/0.png": "gray9"}, ["'b/0.png' is 9x9 L", "'a/0.png' is 8x8 L"]),
        ({"a/0.png": "gray8", "b/0.png": "rgb8"}, ["'b/0.png' is 8x8 RGB"]),
        ({"a/0.png": "gray8", "b/0.png": b"not a png"}, ["'b/0.png' does not decode"]),
        ({"a/0.png": "gray8", "top.png": "gray8"}, ["'top.png' is outside any class folder"]),
        ({"a/0.png": "gray8", "a/b/0.png": "gray8"}, ["'a/b/0.png' is nested below a class folder"]),
        ({"a/0.png": "gray8", "a/notes.txt": b"hi"}, ["'a/notes.txt' is not an image"]),
        ({"a/0.png": "rgba8"}, ["image mode RGBA"]),
    ],
)
def test_image_folder_malformed(tmp_path: Path, files: dict[str, object], words: list[str]) -> None:
    made = {
        "gray8": lambda: _png(_gray(0, 8), "L"),
        "gray9": lambda: _png(_gray(0, 9), "L"),
        "rgb8": lambda: _png(np.zeros((8, 8, 3), dtype=np.uint8), "RGB"),
        "rgba8": lambda: _png(np.zeros((8, 8, 4), dtype=np.uint8), "RGBA"),
    }
    content = {k: made[v]() if isinstance(v, str) else v for k, v in files.items()}
    path = _folder_zip(tmp_path / "f.zip", content)  # type: ignore[arg-type]
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    for word in words:
        assert word in info.value.message, info.value.message


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../evil/0.png", "climbs out"),
        ("a/../../0.png", "climbs out"),
        ("/etc/0.png", "absolute path"),
        ("C:/x/0.png", "absolute path"),
        ("a\\..\\0.png", "backslashes"),
    ],
)
def test_image_folder_traversal_refused(tmp_path: Path, name: str, words: str) -> None:
    path = tmp_path / "f.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/0.png", _png(_gray(0), "L"))
        zf.writestr(zipfile.ZipInfo(name), _png(_gray(1), "L"))
    with pytest.raises(DatasetError, match=words) as info:
        load_dataset(path)
    assert info.value.context["entry"] == name


def test_image_folder_symlink_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/0.png", _png(_gray(0), "L"))
        link = zipfile.ZipInfo("a/1.png")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        load_dataset(path)


def test_zip_limits_entry_count_total_size_and_ratio(tmp_path: Path) -> None:
    files = {f"a/{i}.png": _png(_gray(i), "L") for i in range(5)}
    path = _folder_zip(tmp_path / "f.zip", files)
    with pytest.raises(DatasetLimitError, match=r"entries .* exceeds dataset_max_archive_entries \(5 > 4\)"):
        load_dataset(path, limits=DatasetLimits(max_archive_entries=4))
    with pytest.raises(DatasetLimitError, match=r"unpacked size up to entry 'a/.*' exceeds"):
        load_dataset(path, limits=DatasetLimits(max_unpacked_bytes=100))
    bomb = _folder_zip(tmp_path / "bomb.zip", {"a/0.png": bytes(4 << 20)})
    with pytest.raises(DatasetLimitError, match=r"expands \d+x .*decompression bomb"):
        load_dataset(bomb)


def test_image_pixel_limit(tmp_path: Path) -> None:
    path = _folder_zip(tmp_path / "f.zip", {"a/0.png": _png(_gray(0, 64), "L")})
    with pytest.raises(
        DatasetLimitError, match=r"64x64 pixels exceeds dataset_max_image_pixels \(4,096 > 1,000\)"
    ):
        load_dataset(path, limits=DatasetLimits(max_image_pixels=1000))


def test_unknown_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"hello world")
    with pytest.raises(DatasetError, match="not a supported data set"):
        load_dataset(path)
