"""Every failure leaves the server in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}.

OpenAI clients read `message` and raise by status code, so each error a client can cause gets a 4xx status
and a message that names the offending field; anything unexpected is logged and answered with a generic 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from janus_sdk.errors import GenerationCancelled, JanusError

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499
"""Status for work whose client went away (nginx's convention); nobody is there to read it."""


class APIError(Exception):
    """An error answer: raise it anywhere in a request and the client gets exactly this."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The OpenAI error object."""
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        return JSONResponse(self.body(), self.status, self.headers)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def from_exception(exc: BaseException) -> APIError:
    """The answer for an exception raised by the pipeline or the server's own code."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, GenerationCancelled):
        return APIError(CLIENT_CLOSED, "the request was cancelled", code="cancelled")
    if isinstance(exc, JanusError):
        return APIError(400, str(exc), code=type(exc).__name__)
    log.error("request failed", exc_info=exc)
    return APIError(500, "internal server error (see the server log)", type="server_error")


def field_path(loc: Sequence[int | str]) -> str:
    """('body', 'messages', 0, 'content') -> 'messages[0].content'."""
    path = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def install_error_handlers(app: FastAPI) -> None:
    """Route every error FastAPI, Starlette or our code raises through the OpenAI error shape."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        return from_exception(exc).response()

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            error = first.get("ctx", {}).get("error", "")
            return APIError(
                400, f"the request body is not valid JSON {error}".strip(), code="invalid_json"
            ).response()
        param = field_path(first.get("loc", ()))
        message = f"{param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg"))
        if len(exc.errors()) > 1:
            message += f" (and {len(exc.errors()) - 1} more problem(s))"
        return APIError(400, message, param=param or None, code="invalid_value").response()

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), type=kind, headers=exc.headers).response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(JanusError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, api_error)
