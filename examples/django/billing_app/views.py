"""The user comes from `X-User-Id`: a stand-in for the project's real authentication."""

from __future__ import annotations

import json

from typing import Any, Callable, Dict, List

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


# ---- seed 001: metered usage before and after each model call


@require_GET
def usage(request: HttpRequest, metric: str) -> JsonResponse:
    return JsonResponse(billing().usage(_user(request), metric).to_dict())


@csrf_exempt
@require_POST
def usage_check(request: HttpRequest) -> JsonResponse:
    """Seed 001's one metric (``metric``, ``amount``), or several (``usage``); over a quota
    is QUOTA_EXCEEDED, 429."""
    body = json.loads(request.body or b"{}")
    wanted = body.get("usage") or {body.get("metric", "requests"): body.get("amount", 1)}
    return JsonResponse(billing().require_usage(_user(request), wanted).to_dict())


def fake_model(model_id: str, prompt: str, max_tokens: int) -> Dict[str, Any]:
    """A stand-in model: echoes the prompt, a token per word, and fails on ``fail``."""
    words: List[str] = prompt.split()
    if "fail" in words:
        raise RuntimeError("the model is unavailable")
    answer = words[: max(1, min(len(words), max_tokens))]
    return {"text": " ".join(answer), "tokens_input": len(words), "tokens_output": len(answer)}


# The project's model client; tests and hosts replace it.
model: Callable[[str, str, int], Dict[str, Any]] = fake_model


@csrf_exempt
@require_POST
def chat(request: HttpRequest) -> JsonResponse:
    """Reserve (429 over a quota), call the model outside any transaction, then capture
    what it used; a failed call releases the hold."""
    body = json.loads(request.body or b"{}")
    user, key = _user(request), body.get("idempotency_key", "")
    prompt, max_tokens = str(body.get("prompt", "")), int(body.get("max_tokens", 256))
    estimate = {"requests": 1, "tokens_input": len(prompt.split()) * 2 + 8, "tokens_output": max_tokens}
    hold = billing().reserve(user, usage=estimate, idempotency_key=f"{key}:reserve", ttl_s=300)
    if hold.replayed and hold.status != "open":
        used = {u.metric: u.amount for u in hold.captured}
        return JsonResponse({"hold_id": hold.id, "status": hold.status, "usage": used, "replayed": True})
    model_id = body.get("model_id", "fake-gpt")
    try:
        answer = model(model_id, prompt, max_tokens)
    except Exception:
        billing().release(hold.id, idempotency_key=f"{key}:release")
        error = {"code": "MODEL_ERROR", "message": "the model call failed; nothing was charged", "details": {}}
        return JsonResponse(error, status=502)
    actual = {"requests": 1, "tokens_input": answer["tokens_input"], "tokens_output": answer["tokens_output"]}
    captured = billing().capture(
        hold.id, actual=actual, idempotency_key=f"{key}:capture", model_id=model_id, chat_id=body.get("chat_id")
    )
    return JsonResponse(
        {"hold_id": captured.id, "status": captured.status, "text": answer["text"], "usage": actual, "replayed": False}
    )

