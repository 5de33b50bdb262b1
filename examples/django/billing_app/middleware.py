from __future__ import annotations

from typing import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

import billing_engine as be


class BillingErrorMiddleware:
    """Answers an engine refusal as `{"code", "message", "details"}` with its HTTP status."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, be.BillingError):
            response = JsonResponse(exception.to_dict(), status=exception.http_status)
            if isinstance(exception, be.Busy):  # worth retrying in a moment
                response["Retry-After"] = "1"
            return response
        return None
