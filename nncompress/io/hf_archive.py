"""Reading a Hugging Face model folder, or a zip of one, without trusting any of it.

Hand-written on purpose: this runs in the API process on an uploaded file, so every read is
bounded, a zip member's name is never used as a path until it has been checked against a short
list of expected file names, and tensors are never loaded (safetensors headers are parsed as
JSON, which is all a summary needs). :mod:`nncompress.io.hf_dir` builds on it.

Accepted members: ``config.json``, ``model.safetensors`` or ``model-0000k-of-0000n.safetensors``
shards with ``model.safetensors.index.json``, and a few files that are ignored (README, generation
config, tokenizer and preprocessor files). Anything else is refused by name; ``pytorch_model.bin``
with a hint, since it is a pickle.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nncompress.errors import ModelLoadError

__all__ = [
    "IGNORED_FILES",
    "MAX_CONFIG_BYTES",
    "HfSource",
    "TensorInfo",
    "extract_hf_zip",
    "is_hf_zip",
    "open_hf_source",
    "read_json",
    "read_safetensors_header",
]

MAX_CONFIG_BYTES = 1024 * 1024  # real config.json files are a few KiB; the biggest index.json a few MiB
MAX_INDEX_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 32 * 1024 * 1024  # safetensors caps headers at 100 MB; a 70B model's is ~1 MB
MAX_MEMBERS = 512
DEFAULT_MAX_BYTES = 16 * 1024**3
# safetensors data barely compresses; a member inflating 200× is a zip bomb, not a model.
_MAX_RATIO = 200

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
IGNORED_FILES = frozenset(
    {
        "README.md",
        ".gitattributes",
        "LICENSE",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
        "chat_template.jinja",
        "preprocessor_config.json",
        "image_processor_config.json",
        "processor_config.json",
    }
)
_PICKLED = {"pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack"}
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a safetensors header describes it."""

    file: str
    dtype: str
    shape: tuple[int, ...]


def is_weight_file(name: str) -> bool:
    """Whether ``name`` is a safetensors file name a save_pretrained folder uses."""
    return name == SINGLE or bool(_SHARD.fullmatch(name))


class HfSource:
    """The files of a model folder: a directory on disk or the members of a zip.

    Only names that pass :func:`_check_name` are reachable, so nothing outside the folder or the
    archive is ever opened.
    """

    def __init__(self, path: Path, zf: zipfile.ZipFile | None, prefix: str, files: dict[str, int]) -> None:
        self.path = path
        self._zf = zf
        self._prefix = prefix
        self.files = files  # name → size in bytes

    def open(self, name: str) -> IO[bytes]:
        if name not in self.files:
            raise ModelLoadError(f"the model folder has no {name}", file=name)
        if self._zf is not None:
            return self._zf.open(self._prefix + name)
        return open(self.path / name, "rb")

    def close(self) -> None:
        if self._zf is not None:
            self._zf.close()

    def __enter__(self) -> HfSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_hf_source(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> HfSource:
    """Opens a model folder or a zip of one, refusing unexpected or unsafe members.

    Args:
        path: a directory, or a zip whose members sit at its root or under one folder.
        max_bytes: limit on the total uncompressed size.

    Raises:
        ModelLoadError: unreadable, an unsafe or unexpected member, or over the limits.
    """
    p = Path(path)
    if p.is_dir():
        files: dict[str, int] = {}
        for child in sorted(p.iterdir()):
            info = child.lstat()
            if stat.S_ISDIR(info.st_mode) and child.name.startswith("."):
                continue  # .git, .cache of a local checkout
            if not stat.S_ISREG(info.st_mode):
                raise ModelLoadError(
                    f"{child.name} in the model folder is not a regular file (links and folders are refused)",
                    file=child.name,
                )
            if _keep(child.name):
                files[child.name] = info.st_size
        _check_total(files, max_bytes)
        return HfSource(p, None, "", files)
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(
            f"the upload is neither a model folder nor a readable zip: {exc}", path=str(p)
        ) from exc
    try:
        prefix, files = _zip_members(zf)
        _check_total(files, max_bytes)
    except BaseException:
        zf.close()
        raise
    return HfSource(p, zf, prefix, files)


def is_hf_zip(path: str | Path) -> bool:
    """Whether a zip holds a config.json and safetensors weights at its root or under one folder.

    Only the central directory is read; members are not checked here (``open_hf_source`` does).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError):
        return False
    if len(names) > MAX_MEMBERS:
        return False
    for top in {n.rpartition("/")[0] for n in names if n.rpartition("/")[2] == CONFIG}:
        if top.count("/") > 0:
            continue
        base = f"{top}/" if top else ""
        if any(n.startswith(base) and is_weight_file(n[len(base) :]) for n in names):
            return True
    return False


def read_json(source: HfSource, name: str, limit: int) -> dict[str, Any]:
    """Reads member ``name`` as a JSON object of at most ``limit`` bytes."""
    size = source.files.get(name)
    if size is None:
        raise ModelLoadError(f"the model folder has no {name}", file=name)
    if size > limit:
        raise ModelLoadError(
            f"{name} is {size} bytes; at most {limit} are accepted", file=name, size=size, limit=limit
        )
    with source.open(name) as fh:
        raw = fh.read(limit + 1)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{name} is not valid JSON: {exc}", file=name) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{name} must hold a JSON object", file=name)
    return data


def read_safetensors_header(source: HfSource, name: str) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of the tensors in safetensors member ``name``; no tensor is read.

    Raises:
        ModelLoadError: a header that is too long, not JSON, or whose offsets do not fit the file.
    """
    size = source.files[name]
    with source.open(name) as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{name} is too short to be safetensors", file=name)
        (length,) = struct.unpack("<Q", head)
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise ModelLoadError(f"{name} has an invalid safetensors header length {length}", file=name)
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{name} has a corrupt safetensors header: {exc}", file=name) from exc
    if not isinstance(header, dict):
        raise ModelLoadError(f"{name} has a corrupt safetensors header", file=name)
    data_size = size - 8 - length
    out: dict[str, TensorInfo] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        out[key] = _tensor_info(name, key, entry, data_size)
    return out


def extract_hf_zip(path: str | Path, dest: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Extracts the model files of a zip into ``dest`` (which the caller owns and deletes).

    Only the expected members are written (config, weights, index), under their checked names,
    directly in ``dest``; ignorable files (README, tokenizer…) are skipped.

    Returns:
        ``dest`` as a Path, ready for :func:`nncompress.io.hf_dir.load_hf_dir`.

    Raises:
        ModelLoadError: the zip is unsafe or not a model folder (see :func:`open_hf_source`).
    """
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    with open_hf_source(path, max_bytes=max_bytes) as source:
        if source._zf is None:
            raise ModelLoadError("extract_hf_zip takes a zip file, not a folder", path=str(path))
        for name in source.files:
            with source.open(name) as src, open(out / name, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return out


# --- internals -----------------------------------------------------------------------------------


def _keep(name: str) -> bool:
    """True for a file to read, False for one to ignore; raises for anything else."""
    if name in (CONFIG, INDEX) or is_weight_file(name):
        return True
    if name in IGNORED_FILES:
        return False
    if name in _PICKLED:
        raise ModelLoadError(
            f"{name} holds pickled or non-PyTorch weights, which are not loaded here; save the model with "
            "save_pretrained(dir, safe_serialization=True) so that it writes model.safetensors",
            file=name,
        )
    raise ModelLoadError(
        f"unexpected file {name!r} in the model folder; expected config.json, model.safetensors (or "
        f"model-0000k-of-0000n.safetensors shards with {INDEX}) and optionally tokenizer/README files",
        file=name,
    )


def _check_name(name: str) -> None:
    if (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or re.match(r"^[A-Za-z]:", name)
        or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))
        or "\x00" in name
    ):
        raise ModelLoadError(f"unsafe path {name!r} in the zip", member=name)


def _zip_members(zf: zipfile.ZipFile) -> tuple[str, dict[str, int]]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ModelLoadError(f"the zip has {len(infos)} members; at most {MAX_MEMBERS} are accepted")
    files: list[zipfile.ZipInfo] = []
    for info in infos:
        _check_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ModelLoadError(f"the zip member {info.filename!r} is a symbolic link", member=info.filename)
        if info.flag_bits & 0x1:
            raise ModelLoadError(f"the zip member {info.filename!r} is encrypted", member=info.filename)
        if not info.is_dir():
            files.append(info)
    # Zipping a folder ("zip -r m.zip my-model/") puts every member under one top-level folder.
    tops = {f.filename.split("/")[0] for f in files if "/" in f.filename}
    prefix = f"{tops.pop()}/" if len(tops) == 1 and all("/" in f.filename for f in files) else ""
    out: dict[str, int] = {}
    for info in files:
        name = info.filename[len(prefix) :]
        if "/" in name:
            raise ModelLoadError(
                f"unexpected folder in the zip: {info.filename!r}; put the model files at the root "
                "of the zip or under one folder",
                member=info.filename,
            )
        if name in out:
            raise ModelLoadError(f"the zip holds {name} twice", member=info.filename)
        if info.file_size > (1 << 20) and info.file_size > _MAX_RATIO * max(info.compress_size, 1):
            raise ModelLoadError(
                f"the zip member {info.filename!r} inflates {info.file_size // max(info.compress_size, 1)}×; "
                "refused as a zip bomb",
                member=info.filename,
            )
        if _keep(name):
            out[name] = info.file_size
    return prefix, out


def _check_total(files: dict[str, int], max_bytes: int) -> None:
    total = sum(files.values())
    if total > max_bytes:
        raise ModelLoadError(
            f"the model files hold {total} bytes; at most {max_bytes} are accepted",
            size=total,
            limit=max_bytes,
        )


def _tensor_info(file: str, key: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise ModelLoadError(f"{file}: the header entry of {key!r} is not an object", file=file, key=key)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if (
        not isinstance(dtype, str)
        or dtype not in _DTYPE_BYTES
        or not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
    ):
        raise ModelLoadError(f"{file}: the header entry of {key!r} is malformed", file=file, key=key)
    numel = 1
    for d in shape:
        numel *= d
    begin, end = offsets
    if not (0 <= begin <= end <= data_size and end - begin == numel * _DTYPE_BYTES[dtype]):
        raise ModelLoadError(
            f"{file}: the data offsets of {key!r} do not match its shape or the file size", file=file, key=key
        )
    return TensorInfo(file=file, dtype=dtype, shape=tuple(shape))
