"""Requests generated from the FastAPI app's own OpenAPI document, sent to the app
(``generated.py`` says what is checked), on a real SQLite file with the fake YooKassa."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "bindings-python" / "tests")]
from app import create_app  # noqa: E402
from generated import MODES, check_every_operation, open_billing  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    billing, yookassa = open_billing(tmp_path_factory.mktemp("generated"))
    yield create_app(billing)
    yookassa.close()


@pytest.mark.parametrize("mode", MODES)
def test_generated_requests_get_no_unexplained_5xx_and_match_the_document(app: Any, mode: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    check_every_operation(schema, mode, lambda case: case.call())
