"""The OpenAI server's one error type: an HTTP status and OpenAI's error body."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An OpenAI-style error: HTTP status and ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 for a request the client must change."""
    return ApiError(400, message, param=param, code=code)
