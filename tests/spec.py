"""OpenAI's own JSON schemas (shared/reference/openai-chat-schemas.json) as test validators."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_HERE = Path(__file__).resolve().parent
SCHEMA_FILE = _HERE / "data" / "openai-chat-schemas.json"
RESPONSES_SCHEMA_FILE = _HERE / "data" / "openai-responses-schemas.json"


@lru_cache(maxsize=None)
def _validator(name: str, file: Path = SCHEMA_FILE) -> Draft202012Validator:
    spec = json.loads(file.read_text())
    registry = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"urn:spec#/components/schemas/{name}"}, registry=registry)


def assert_valid(name: str, payload: Any, file: Path = SCHEMA_FILE) -> None:
    """Fail with every violation of OpenAI's schema ``name`` in ``payload``."""
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator(name, file).iter_errors(payload)]
    assert not errors, f"{name} violations:\n" + "\n".join(errors)


def assert_valid_response(name: str, payload: Any) -> None:
    """The same against OpenAI's Responses API schemas (``Response``, ``ResponseStreamEvent``…)."""
    assert_valid(name, payload, RESPONSES_SCHEMA_FILE)


def assert_error(response: Any, status: int, param: str | None = "*", code: str | None = "*") -> dict:
    """An OpenAI error envelope with the right status (and param/code when given)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert_valid("ErrorResponse", body)
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["code"] is None or isinstance(err["code"], str)
    if param != "*":
        assert err["param"] == param, err
    if code != "*":
        assert err["code"] == code, err
    for leak in ("Traceback", "pydantic", "list index out of range", "errors.pydantic.dev"):
        assert leak not in err["message"], err["message"]
    return err
