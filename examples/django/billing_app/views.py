"""The user comes from `X-User-Id`: a stand-in for the project's real authentication."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .engine import billing


def _user(request: HttpRequest) -> str:
    return request.headers.get("X-User-Id", "")


@require_GET
def me(request: HttpRequest) -> JsonResponse:
    return JsonResponse(billing().billing_me(_user(request)).to_dict())


@require_GET
def state(request: HttpRequest) -> JsonResponse:
    return JsonResponse(billing().state(_user(request)).to_dict())


@csrf_exempt
@require_POST
def charge_generation(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    charge = billing().charge(
        _user(request), "generation", idempotency_key=body.get("idempotency_key", ""), metadata=body.get("metadata")
    )
    return JsonResponse(charge.to_dict())
