"""Domain errors of the service; one exception handler (app/problems.py) maps them to problem+json.

Each error has a stable ``code`` (the problem ``type`` is ``urn:nncompress:problem:<code>``), an
HTTP status and a title; the message is the ``detail``, and ``errors`` lists per-field causes.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of the errors the service raises on purpose."""

    code: ClassVar[str] = "service_error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class InvalidCursor(ServiceError):
    code, status, title = "invalid_cursor", 400, "Invalid cursor"


class InvalidRange(ServiceError):
    code, status, title = "invalid_range", 400, "Malformed Range header"


class Unauthorized(ServiceError):
    code, status, title = "unauthorized", 401, "Missing or wrong API key"


class NotFound(ServiceError):
    code, status, title = "not_found", 404, "Not found"


class JobNotFinished(ServiceError):
    code, status, title = "job_not_finished", 409, "Job not finished"


class JobNotSucceeded(ServiceError):
    code, status, title = "job_not_succeeded", 409, "Job did not succeed"


class JobFinished(ServiceError):
    code, status, title = "job_finished", 409, "Job already finished"


class IdempotencyConflict(ServiceError):
    code, status, title = "idempotency_conflict", 409, "Idempotency key reused with a different request"


class PreflightUnavailable(ServiceError):
    code, status, title = "preflight_unavailable", 409, "Preflight needs a registry architecture"


class UploadTooLarge(ServiceError):
    code, status, title = "upload_too_large", 413, "Upload too large"


class RangeNotSatisfiable(ServiceError):
    code, status, title = "range_not_satisfiable", 416, "Range not satisfiable"


class InvalidUpload(ServiceError):
    code, status, title = "invalid_upload", 422, "Invalid upload"


class PickleDisabled(ServiceError):
    code, status, title = "pickle_disabled", 422, "Pickled models are disabled"


class UnknownArchitecture(ServiceError):
    code, status, title = "unknown_architecture", 422, "Unknown architecture"


class FormatMismatch(ServiceError):
    code, status, title = "format_mismatch", 422, "Declared format differs from the file's content"


class WeightsMismatch(ServiceError):
    code, status, title = "weights_mismatch", 422, "Weights do not fit the architecture"


class UnsupportedModelFormat(ServiceError):
    code, status, title = "unsupported_model_format", 422, "This kind of model file cannot be compressed"


class UnsupportedOnnxOps(ServiceError):
    code, status, title = "unsupported_onnx_ops", 422, "The ONNX graph uses ops the importer does not support"


class OnnxExternalData(ServiceError):
    code, status, title = "onnx_external_data", 422, "The ONNX model keeps its tensors in another file"


class InvalidInputShape(ServiceError):
    code, status, title = "invalid_input_shape", 422, "Input shape does not fit the model"


class InvalidWebhook(ServiceError):
    code, status, title = "invalid_webhook", 422, "Webhook URL refused"


class RateLimited(ServiceError):
    code, status, title = "rate_limited", 429, "Too many requests"


class TooManyJobs(ServiceError):
    code, status, title = "too_many_jobs", 429, "Too many unfinished jobs"


class TooManyUploads(ServiceError):
    code, status, title = "too_many_uploads", 429, "Too many uploads in progress"


class InvalidJobSpec(ServiceError):
    code, status, title = "invalid_job_spec", 422, "Invalid job specification"


class NotReady(ServiceError):
    code, status, title = "not_ready", 503, "Service not ready"


class StorageUnavailable(ServiceError):
    code, status, title = "storage_unavailable", 503, "Object storage unavailable"
