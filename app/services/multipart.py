"""Streaming a multipart/form-data request: the file part goes to storage chunk by chunk.

Starlette's ``request.form()`` spools the whole body before the route runs, so a size limit would
only apply after the bytes were on disk. Here the limit is checked as bytes arrive, and nothing
but the small text fields is kept in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from core.errors import InvalidUpload, UploadTooLarge
from core.storage import LimitExceeded, Storage, TempWrite

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 16
# Headers and text fields around the file; a Content-Length above limit + this is refused at once.
MULTIPART_OVERHEAD = 1024 * 1024


@dataclass
class ReceivedForm:
    """What a multipart upload carried: text fields, and the file written to a temp file.

    ``files``/``filenames`` hold every file part by field name (several for a data set upload);
    ``file``/``filename`` are the first one.
    """

    fields: dict[str, str] = field(default_factory=dict)
    file: TempWrite | None = None
    filename: str = ""
    files: dict[str, TempWrite] = field(default_factory=dict)
    filenames: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        """Deletes every temp file of the form (idempotent)."""
        for temp in self.files.values():
            temp.discard()
        if self.file is not None:
            self.file.discard()


class _Collector:
    def __init__(self, storage: Storage, file_fields: tuple[str, ...], limit: int) -> None:
        self.storage, self.file_fields, self.limit = storage, file_fields, limit
        self.form = ReceivedForm()
        self.headers: dict[bytes, bytes] = {}
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.name = ""
        self.text: bytearray | None = None
        self.to_file = False
        self.current: TempWrite | None = None

    def on_part_begin(self) -> None:
        self.headers, self.name, self.text, self.to_file = {}, "", None, False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = options.get(b"name", b"").decode("utf-8", "replace")
        if self.name in self.file_fields and b"filename" in options:
            if self.name in self.form.files:
                raise InvalidUpload(f"the form carries more than one '{self.name}' part")
            filename = options[b"filename"].decode("utf-8", "replace")
            # The limit covers all file parts together: each new part gets what the earlier ones left.
            used = sum(temp.size for temp in self.form.files.values())
            temp = self.storage.temp_write(self.limit - used)
            self.form.files[self.name], self.form.filenames[self.name] = temp, filename
            if self.form.file is None:
                self.form.file, self.form.filename = temp, filename
            self.current = temp
            self.to_file = True
        else:
            if len(self.form.fields) >= MAX_FIELDS:
                raise InvalidUpload(f"the form has more than {MAX_FIELDS} fields")
            self.text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.to_file:
            assert self.current is not None
            self.current.write(data[start:end])
        elif self.text is not None:
            self.text += data[start:end]
            if len(self.text) > MAX_FIELD_BYTES:
                raise InvalidUpload(f"form field {self.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self.text is not None and self.name:
            self.form.fields[self.name] = self.text.decode("utf-8", "replace")
        self.to_file = False


async def receive_form(
    request: Request,
    *,
    storage: Storage,
    file_field: str,
    limit: int,
    extra_file_fields: tuple[str, ...] = (),
) -> ReceivedForm:
    """Parses the request body as it streams in; the caller owns (commits or discards) ``form.files``.

    Args:
        file_field: the required file part.
        limit: the most bytes all file parts may hold together.
        extra_file_fields: further, optional file parts (``form.files[name]``).

    Raises:
        UploadTooLarge: the file parts exceed ``limit`` bytes (the temp files are already deleted).
        InvalidUpload: the body is not multipart/form-data or has no ``file_field`` part.
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidUpload("expected a multipart/form-data body with a 'file' part")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise _too_large(limit)
    collector = _Collector(storage, (file_field, *extra_file_fields), limit)
    callbacks = {name: getattr(collector, name) for name in dir(_Collector) if name.startswith("on_")}
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if collector.current is not None and collector.current.backlog:
                # An object store's parts are still uploading: wait for them off the event loop.
                await run_in_threadpool(collector.current.drain)
        parser.finalize()
    except LimitExceeded:
        _discard(collector.form)
        raise _too_large(limit) from None
    except FormParserError as exc:
        _discard(collector.form)
        raise InvalidUpload(f"malformed multipart body: {exc}") from None
    except BaseException:
        _discard(collector.form)
        raise
    if file_field not in collector.form.files:
        _discard(collector.form)
        raise InvalidUpload(f"the form has no '{file_field}' file part")
    # The required part comes first, whatever order the client sent the parts in.
    collector.form.file = collector.form.files[file_field]
    collector.form.filename = collector.form.filenames[file_field]
    try:
        for temp in collector.form.files.values():
            await run_in_threadpool(temp.close)  # fsync, or an object store's last part: off the loop
    except BaseException:
        _discard(collector.form)
        raise
    return collector.form


def _discard(form: ReceivedForm) -> None:
    form.discard()


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"the upload exceeds the limit of {limit} bytes (NNCOMPRESS_MAX_UPLOAD_BYTES)",
        errors=[{"limit_bytes": limit}],
    )
