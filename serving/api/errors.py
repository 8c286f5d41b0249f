"""The fixed set of API errors. Each has one status code and the OpenAI error shape:
{"error": {"message", "type", "code"}}; the routes under a TEI base URL give the same errors in TEI's
shape (`serving/api/dialects/tei.py`). A traceback never reaches a client."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ApiError(Exception):
    status_code = 500
    type = "internal_error"
    code = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "code": self.code}}
        return JSONResponse(body, status_code=self.status_code, headers=self.headers)


class InvalidRequest(ApiError):
    """Malformed body (not JSON, not an object)."""
    status_code, type, code = 400, "invalid_request_error", "invalid_request"


class ValidationFailed(ApiError):
    """Well-formed but invalid: wrong types, empty inputs, dimensions out of range."""
    status_code, type, code = 422, "invalid_request_error", "validation_error"


class Unauthorized(ApiError):
    status_code, type, code = 401, "authentication_error", "invalid_api_key"


class ModelNotFound(ApiError):
    status_code, type, code = 404, "invalid_request_error", "model_not_found"


class RouteNotFound(ApiError):
    status_code, type, code = 404, "invalid_request_error", "not_found"


class MethodNotAllowed(ApiError):
    status_code, type, code = 405, "invalid_request_error", "method_not_allowed"


class RequestTooLarge(ApiError):
    """Over a configured limit: inputs, characters, documents, or tokens when truncation is off."""
    status_code, type, code = 413, "invalid_request_error", "request_too_large"


class ModelKindMismatch(ApiError):
    """A TEI base URL (`/tei/{model}/...`) asked for what its model's kind does not do: a rerank of an
    embedding model, an embedding of a reranker. TEI answers 424 (its `Backend` error type)."""
    status_code, type, code = 424, "invalid_request_error", "wrong_model_kind"


class Overloaded(ApiError):
    """A model deployment's queue bound was hit; retry after the Retry-After header."""
    status_code, type, code = 429, "rate_limit_error", "overloaded"


class QuotaExceeded(ApiError):
    """The caller's tenant is over one of its quotas; retry after the Retry-After header."""
    status_code, type, code = 429, "rate_limit_error", "quota_exceeded"


class Unavailable(ApiError):
    """No healthy replica can serve the model right now."""
    status_code, type, code = 503, "service_unavailable", "model_unavailable"


class RouterBusy(Overloaded):
    """The ingress replica already runs `router.max_ongoing_requests` requests."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest, 401: Unauthorized, 404: RouteNotFound, 405: MethodNotAllowed, 413: RequestTooLarge,
    422: ValidationFailed, 429: Overloaded, 503: Unavailable,
}


def http_error(status_code: int, message: str, headers: dict[str, str] | None = None) -> ApiError:
    """An ApiError with the given status: one of the fixed types, or a plain one for other 4xx codes."""
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code](message, headers)
    error = ApiError(message, headers)
    error.status_code = status_code
    if 400 <= status_code < 500:
        error.type, error.code = "invalid_request_error", f"http_{status_code}"
    return error


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        message = str(err.get("msg"))
        if err.get("type") == "literal_error":  # a misspelt choice: name it beside the allowed ones
            message += f", got {err.get('input')!r}"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


def api_error(request: Request, exc: Exception) -> ApiError:
    """The API error an exception means: ours as they are, FastAPI's validation errors and Starlette's
    HTTP errors as one of the fixed types, anything else a 500 (logged here, never shown)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return InvalidRequest("request body is not valid JSON")
        return ValidationFailed(_validation_message(exc))
    if isinstance(exc, StarletteHTTPException):
        # Starlette's and FastAPI's own errors keep their status and headers (405 carries Allow).
        messages = {
            400: "request body could not be parsed: send UTF-8 encoded JSON",
            404: f"no route {request.method} {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return http_error(exc.status_code, messages.get(exc.status_code, str(exc.detail)), exc.headers)
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return ApiError("internal error; the server logged the details")


def install_error_handlers(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception):
        return api_error(request, exc).response()

    for kind in (ApiError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, answer)
