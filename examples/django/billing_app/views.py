"""The service's routes as Django views: the same routes, answers and errors as the
FastAPI example (its ``/openapi.json`` documents both; see the README). Each view is one
call into the engine; ``api.py`` holds the HTTP layer: one error shape, bounded input."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from django.http import HttpRequest, JsonResponse

import billing_engine as be

from .api import MAX_ID, MAX_URL, Refusal, api, body, error_answer, field, idempotency_key, integer, log, query_int
from .api import text, user
from .engine import billing


def answer(data: Any) -> JsonResponse:
    return JsonResponse(data, safe=False)


# ---- seed 003: what the frontend reads and starts


@api("GET")
def me(request: HttpRequest) -> JsonResponse:
    return answer(billing().billing_me(user(request)).to_dict())


@api("GET")
def plans(request: HttpRequest) -> JsonResponse:
    return answer([plan.to_dict() for plan in billing().plans()])


@api("GET")
def subscription(request: HttpRequest) -> JsonResponse:
    return answer(billing().subscription_details(user(request)).to_dict())


@api("POST")
def autorenew(request: HttpRequest) -> JsonResponse:
    data = body(request)
    enabled = field(data, "enabled", bool, required=True)
    return answer(billing().set_autorenew(user(request), enabled).to_dict())


@api("POST")
def create_payment(request: HttpRequest) -> JsonResponse:
    data = body(request)
    created = billing().create_payment(
        user(request),
        plan_code=text(data.get("plan_code"), "plan_code", 64, required=False),
        package_code=text(data.get("package_code"), "package_code", 64, required=False),
        return_url=text(data.get("return_url"), "return_url", MAX_URL, required=False),
        save_payment_method=field(data, "save_payment_method", bool, False),
        idempotency_key=idempotency_key(request),
    )
    return answer(created.to_dict())


@api("POST")
def bind_card(request: HttpRequest) -> JsonResponse:
    body(request)
    created = billing().start_card_binding(user(request), idempotency_key=idempotency_key(request))
    return answer({"payment_id": created.payment_id, "confirmation_url": created.confirmation_url})


@api("GET")
def payment_method(request: HttpRequest) -> JsonResponse:
    return answer(billing().payment_method(user(request)).to_dict())


@api("GET")
def payments(request: HttpRequest) -> JsonResponse:
    limit = query_int(request, "limit", 10, (1, 1000))
    assert limit is not None
    return answer(billing().payments(user(request), limit).to_dict())


@api("POST")
def yookassa_webhook(request: HttpRequest) -> JsonResponse:
    # 200 for everything the engine will never apply (YooKassa retries anything else
    # for 24 hours); 5xx only when a retry can help (PAYMENT_ERROR, BUSY).
    if len(request.body) > 64 * 1024:
        raise Refusal(413, "PAYLOAD_TOO_LARGE", "the notification is too large")
    try:
        outcome = billing().handle_yookassa_webhook(
            request.body, remote_addr=request.META.get("REMOTE_ADDR"), headers=dict(request.headers)
        )
    except be.InvalidWebhook as rejected:
        log.warning("YooKassa notification rejected: %s", rejected)
        return answer({"status": "rejected", **rejected.to_dict()})
    return answer(outcome.to_dict())


# ---- seed 004: crypto payments


@api("POST")
def crypto_checkout(request: HttpRequest) -> JsonResponse:
    data = body(request)
    checkout = billing().create_crypto_payment(
        user(request),
        plan_code=text(data.get("plan_code"), "plan_code", 64, required=False),
        package_code=text(data.get("package_code"), "package_code", 64, required=False),
        chain_id=integer(data.get("chain_id"), "chain_id", 1, 2**32 - 1),
        idempotency_key=idempotency_key(request),
    )
    return answer(checkout.to_dict())


@api("POST")
def crypto_webhook(request: HttpRequest) -> JsonResponse:
    # Signed by Alchemy; a forged or malformed one is INVALID_WEBHOOK (400). Each transfer
    # applies at most once, so a redelivery is harmless.
    if len(request.body) > 64 * 1024:
        raise Refusal(413, "PAYLOAD_TOO_LARGE", "the notification is too large")
    outcome = billing().handle_crypto_webhook(request.body, headers=dict(request.headers))
    return answer(outcome.to_dict())


# ---- seed 000: the app's own billing screen and its internal charge calls


@api("GET")
def state(request: HttpRequest) -> JsonResponse:
    return answer(billing().state(user(request)).to_dict())


@api("GET")
def ledger(request: HttpRequest) -> JsonResponse:
    limit = query_int(request, "limit", 50, (1, 1000))
    before = query_int(request, "before", None, (1, 2**63 - 1))
    entries = billing().ledger(user(request), limit=limit or 50, before=before)
    return answer({"results": [entry.to_dict() for entry in entries]})


def charge(request: HttpRequest, operation: str) -> JsonResponse:
    data = body(request)
    key = text(data.get("idempotency_key"), "idempotency_key", MAX_ID)
    metadata = field(data, "metadata", dict)
    return answer(billing().charge(user(request), operation, idempotency_key=key, metadata=metadata).to_dict())


@api("POST")
def charge_generation(request: HttpRequest) -> JsonResponse:
    return charge(request, "generation")


@api("POST")
def charge_assistant(request: HttpRequest) -> JsonResponse:
    return charge(request, "assistant")


# ---- seed 001: metered usage before and after each model call


@api("GET")
def usage(request: HttpRequest, metric: str) -> JsonResponse:
    return answer(billing().usage(user(request), text(metric, "metric", 64)).to_dict())


@api("POST")
def usage_check(request: HttpRequest) -> JsonResponse:
    """Seed 001's one metric (``metric``, ``amount``), or several (``usage``); over a quota
    is QUOTA_EXCEEDED, 429."""
    data = body(request)
    several = field(data, "usage", dict)
    if several is not None:
        if len(several) > 16:
            raise Refusal(400, "INVALID_ARGUMENT", "usage: at most 16 metrics", {"field": "usage"})
        wanted = {text(name, "usage", 64): integer(amount, "usage", 0, 2**53) for name, amount in several.items()}
    else:
        metric = text(data.get("metric"), "metric", 64, required=False) or "requests"
        wanted = {metric: integer(data.get("amount", 1), "amount", 0, 2**53)}
    return answer(billing().require_usage(user(request), wanted).to_dict())


def fake_model(model_id: str, prompt: str, max_tokens: int) -> Dict[str, Any]:
    """A stand-in model: echoes the prompt, a token per word, and fails on ``fail``."""
    words: List[str] = prompt.split()
    if "fail" in words:
        raise RuntimeError("the model is unavailable")
    answer = words[: max(1, min(len(words), max_tokens))]
    return {"text": " ".join(answer), "tokens_input": len(words), "tokens_output": len(answer)}


# The project's model client; tests and hosts replace it.
model: Callable[[str, str, int], Dict[str, Any]] = fake_model


@api("POST")
def chat(request: HttpRequest) -> JsonResponse:
    """Reserve (429 over a quota), call the model outside any transaction, then capture
    what it used; a failed call releases the hold."""
    data = body(request)
    who = user(request)
    key = text(data.get("idempotency_key"), "idempotency_key", MAX_ID - 16)
    chat_id = text(data.get("chat_id"), "chat_id", MAX_ID)
    model_id = text(data.get("model_id", "fake-gpt"), "model_id", MAX_ID)
    prompt = field(data, "prompt", str, required=True)
    if len(prompt) > 100_000:
        raise Refusal(400, "INVALID_ARGUMENT", "prompt: at most 100000 characters", {"field": "prompt"})
    max_tokens = integer(data.get("max_tokens", 256), "max_tokens", 1, 1_000_000)
    estimate = {"requests": 1, "tokens_input": len(prompt.split()) * 2 + 8, "tokens_output": max_tokens}
    hold = billing().reserve(who, usage=estimate, idempotency_key=f"{key}:reserve", ttl_s=300)
    if hold.replayed and hold.status != "open":
        used = {u.metric: u.amount for u in hold.captured}
        return answer({"hold_id": hold.id, "status": hold.status, "usage": used, "replayed": True})
    try:
        reply = model(model_id, prompt, max_tokens)
    except Exception:
        billing().release(hold.id, idempotency_key=f"{key}:release")
        return error_answer(502, "MODEL_ERROR", "the model call failed; nothing was charged")
    actual = {"requests": 1, "tokens_input": reply["tokens_input"], "tokens_output": reply["tokens_output"]}
    captured = billing().capture(
        hold.id, actual=actual, idempotency_key=f"{key}:capture", model_id=model_id, chat_id=chat_id
    )
    return answer(
        {"hold_id": captured.id, "status": captured.status, "text": reply["text"], "usage": actual, "replayed": False}
    )


@api("GET")
def entitlements(request: HttpRequest) -> JsonResponse:
    return answer(billing().entitlements(user(request)).to_dict())


# ---- the HTTP layer's own answers


def not_found(request: HttpRequest, exception: Exception) -> JsonResponse:
    return error_answer(404, "NOT_FOUND", "no such route")


def bad_request(request: HttpRequest, exception: Exception) -> JsonResponse:
    return error_answer(400, "BAD_REQUEST", "the request could not be read")


def server_error(request: HttpRequest) -> JsonResponse:
    return error_answer(500, "INTERNAL", "an unexpected error; it was logged")
