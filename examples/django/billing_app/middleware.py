from __future__ import annotations

from typing import Callable

from django.http import HttpRequest, HttpResponse

from .api import error_answer, log


class ServerErrorMiddleware:
    """Logs an unexpected error with its traceback and answers it in the error shape. The
    views answer every engine refusal and bad request themselves (see `api.py`); this is
    for what nobody expected."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_answer(500, "INTERNAL", "an unexpected error; it was logged")
