"""Requests generated from the service's OpenAPI document, sent to the Django views
through Django's test client (``examples/fastapi/generated.py`` says what is checked). The
document is the FastAPI example's: the two examples serve the same routes with the same
answers, and this test is what keeps them so."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import requests
import schemathesis
from django.test import Client
from schemathesis.core.transport import Response

from billing_app import engine

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "fastapi"), str(HERE.parents[1] / "bindings-python" / "tests")]
from app import create_app  # noqa: E402
from generated import MODES, check_every_operation, open_billing  # noqa: E402

#: Headers of schemathesis's own HTTP client, which Django's test client does not need.
TRANSPORT_HEADERS = {"user-agent", "accept-encoding", "accept", "connection", "content-length"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    billing, yookassa = open_billing(tmp_path_factory.mktemp("generated"))
    engine.use(billing)
    yield create_app(billing).openapi()
    engine.use(None)
    yookassa.close()


def send(client: Client, case: Any) -> Response:
    """The case as a request to the Django views, and Django's answer as schemathesis reads
    answers."""
    sent = case.as_transport_kwargs(base_url="http://testserver")
    path = sent["url"][len("http://testserver") :]
    headers = {name: value for name, value in sent["headers"].items() if name.lower() not in TRANSPORT_HEADERS}
    content_type = headers.pop("Content-Type", headers.pop("content-type", "application/octet-stream"))
    if "json" in sent:
        data: Any = json.dumps(sent["json"])
    else:
        data = sent.get("data") or b""
    answer = client.generic(
        sent["method"], path, data, content_type=content_type, headers=headers, query_params=sent.get("params") or {}
    )
    request = requests.Request(sent["method"], sent["url"]).prepare()
    answer_headers = {name: [value] for name, value in answer.headers.items()}
    return Response(answer.status_code, answer_headers, answer.content, request, elapsed=0.0, verify=True)


@pytest.mark.parametrize("mode", MODES)
def test_generated_requests_to_the_django_views_get_no_unexplained_5xx(document: Dict[str, Any], mode: Any) -> None:
    client = Client(raise_request_exception=False)
    schema = schemathesis.openapi.from_dict(document)
    check_every_operation(schema, mode, lambda case: send(client, case))
