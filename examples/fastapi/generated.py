"""The generated-request check both examples run: requests generated from the service's
OpenAPI document (schemathesis over hypothesis), valid and invalid, to every operation.
No answer may be a 5xx other than the documented 502 and 503, every error has the one
shape and repeats a bounded part of the request, and every answer to a valid request
matches the document.

Bounded and derandomized, so CI sends the same requests every run:
``BILLING_GENERATED_EXAMPLES`` per operation and mode, 25 by default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, List, Tuple

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import billing_engine as be
from fake_yookassa import SECRET_KEY, SHOP_ID, FakeYooKassa
from support import new_database

EXAMPLES = int(os.environ.get("BILLING_GENERATED_EXAMPLES", "25"))
#: The only 5xx answers the service documents: the payment provider or the model failed
#: (502), the store is busy (503).
DOCUMENTED_5XX = {502, 503}
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
#: A user who exists, so that generated requests also reach the engine's deeper paths.
KNOWN_USER = "gen-user"


def open_billing(directory: Path) -> Tuple[be.Billing, FakeYooKassa]:
    """An engine on a new database in ``directory``, on the web tariffs, paying through a
    fake YooKassa (close it when done) and taking crypto notifications, with
    ``KNOWN_USER`` registered."""
    yookassa = FakeYooKassa()
    config = be.YooKassaConfig(
        SHOP_ID, SECRET_KEY, api_url=yookassa.url, return_url="https://app.example/done", trusted_networks=[], timeout_s=2
    )
    catalog = be.Catalog.from_toml_file(Path(__file__).resolve().parents[1] / "web_tariffs.toml")
    billing = be.Billing.open(
        new_database(directory), catalog, yookassa=config, alchemy_signing_key="whsec_generated_requests"
    )
    billing.register_user(KNOWN_USER)
    return billing, yookassa


def operations(schema: Any) -> List[Any]:
    """Every operation of the document; one schemathesis cannot read fails the test."""
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        found.append(result.ok())
    assert len(found) >= 15, "every route is in the document"
    return found


def check_every_operation(schema: Any, mode: Any, send: Callable[[Any], Any]) -> None:
    """Sends each operation's generated requests through ``send`` and checks the answers.
    Half the requests name ``KNOWN_USER``, so that they also reach the engine's deeper
    paths rather than stopping at an unknown user."""
    for operation in operations(schema):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), known=st.booleans())
        def call(case: Any, known: bool) -> None:
            user_header = next((name for name in case.headers or {} if name.lower() == "x-user-id"), None)
            if known and user_header:
                case.headers[user_header] = KNOWN_USER
            response = send(case)
            assert response.status_code < 500 or response.status_code in DOCUMENTED_5XX, (
                f"{case.method} {case.path}: {response.status_code} {response.content[:500]!r}"
            )
            if response.status_code >= 400:
                assert set(json.loads(response.content)) == {"code", "message", "details"}, response.content[:500]
                assert len(response.content) < 4096, "an error repeats a bounded part of the request"
            if mode == schemathesis.GenerationMode.POSITIVE:
                case.validate_response(response, checks=CHECKS)

        try:
            call()
        except Unsatisfiable:
            # An operation with nothing a request can get wrong (no parameters, no body)
            # has no invalid requests to generate.
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
