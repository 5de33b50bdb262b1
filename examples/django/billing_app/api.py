"""The HTTP layer of the views: one error shape, bounded input, and no 500 from a client.

Every answer that is not a success is ``{"code", "message", "details"}``: the engine's
errors with the status their class names, and the HTTP layer's own (``BAD_REQUEST``,
``NOT_FOUND``, ``METHOD_NOT_ALLOWED``, ``PAYLOAD_TOO_LARGE``). A body is JSON, an object,
at most ``MAX_BODY_BYTES``; fields are checked for type and length before the engine sees
them, and an error repeats at most a bounded part of the request.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from typing import Any, Callable, Dict, Optional, Tuple, Type, TypeVar

from django.http import HttpRequest, HttpResponse, JsonResponse

import billing_engine as be

log = logging.getLogger("billing")

MAX_BODY_BYTES = 64 * 1024
MAX_ID = 128
MAX_URL = 2048

View = Callable[..., HttpResponse]
T = TypeVar("T")


class Refusal(Exception):
    """A request refused by the HTTP layer, answered in the one error shape."""

    def __init__(self, status: int, code: str, message: str, details: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.details = status, code, details or {}

    def answer(self) -> JsonResponse:
        return error_answer(self.status, self.code, str(self), self.details)


def error_answer(status: int, code: str, message: str, details: Optional[Dict[str, Any]] = None) -> JsonResponse:
    return JsonResponse({"code": code, "message": message, "details": details or {}}, status=status)


def invalid(field: str, message: str) -> Refusal:
    return Refusal(400, "INVALID_ARGUMENT", f"{field}: {message}", {"field": field, "message": message})


def api(method: str) -> Callable[[View], View]:
    """A view answering ``method`` only, with the engine's and the HTTP layer's errors in
    the one shape."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        def handle(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != method:
                return error_answer(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here; use {method}")
            try:
                return view(request, *args, **kwargs)
            except Refusal as refusal:
                return refusal.answer()
            except be.BillingError as error:
                response = JsonResponse(error.to_dict(), status=error.http_status)
                if isinstance(error, be.Busy):  # worth retrying in a moment
                    response["Retry-After"] = "1"
                return response

        handle.csrf_exempt = True  # type: ignore[attr-defined]
        return handle

    return wrap


def user(request: HttpRequest) -> str:
    """``X-User-Id``: a stand-in for the project's real authentication."""
    return text(request.headers.get("X-User-Id"), "X-User-Id", MAX_ID)


def idempotency_key(request: HttpRequest) -> str:
    """The ``Idempotency-Key`` header; absent, the call gets a key of its own; blank, it is
    refused, so that a client that meant to send one does not lose idempotency silently."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return str(uuid.uuid4())
    return text(key, "Idempotency-Key", MAX_ID)


def body(request: HttpRequest) -> Dict[str, Any]:
    """The JSON object a POST carries (``{}`` when it carries nothing)."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
        raise Refusal(413, "PAYLOAD_TOO_LARGE", f"the request body is larger than {MAX_BODY_BYTES} bytes")
    raw = request.body
    if not raw:
        return {}
    if request.content_type != "application/json":
        raise Refusal(400, "BAD_REQUEST", "the body must be JSON (Content-Type: application/json)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "BAD_REQUEST", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Refusal(400, "BAD_REQUEST", "the body must be a JSON object")
    return data


def field(data: Dict[str, Any], name: str, kind: Type[T], default: Optional[T] = None, *, required: bool = False) -> Any:
    """``data[name]``, checked to be a ``kind`` (``bool`` is not an ``int``)."""
    if name not in data or data[name] is None:
        if required:
            raise invalid(name, "is required")
        return default
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise invalid(name, f"must be a {kind.__name__}")
    return value


def text(value: Any, name: str, max_length: int, *, required: bool = True) -> Any:
    """A string of 1 to ``max_length`` characters that can be encoded (no lone surrogates)."""
    if value is None:
        if required:
            raise invalid(name, "is required")
        return None
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if not 1 <= len(value) <= max_length:
        raise invalid(name, f"must have 1 to {max_length} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(name, "is not valid Unicode") from None
    if not value.strip():
        raise invalid(name, "must not be blank")
    return value


def integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise invalid(name, "must be an integer") from None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(name, f"must be an integer from {low} to {high}")
    return value


def query_int(request: HttpRequest, name: str, default: Optional[int], bounds: Tuple[int, int]) -> Optional[int]:
    raw = request.GET.get(name)
    return default if raw is None else integer(raw, name, *bounds)
