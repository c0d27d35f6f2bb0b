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
COMPLETIONS_SCHEMA_FILE = _HERE / "data" / "openai-completions-schemas.json"


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


def assert_valid_completion(payload: Any, *, chunk: bool = False) -> None:
    """Against OpenAI's ``CreateCompletionResponse`` (the JSON answer and every stream chunk
    share it). Two nulls that OpenAI's own API sends are allowed where its schema has none: a
    chunk's ``finish_reason`` before the last one, and the first prompt token's logprob and
    top logprobs under ``echo`` (that token has no context)."""
    relaxed = payload
    if isinstance(payload, dict) and isinstance(payload.get("choices"), list):
        choices = []
        for choice in payload["choices"]:
            choice = dict(choice)
            if chunk and "finish_reason" in choice and choice["finish_reason"] is None:
                choice["finish_reason"] = "stop"  # the rest of the chunk is checked as is
            lp = choice.get("logprobs")
            if isinstance(lp, dict):
                first_null = bool(lp.get("token_logprobs")) and lp["token_logprobs"][0] is None
                if first_null:
                    assert lp["top_logprobs"][0] is None, lp
                    lp = {**lp, "token_logprobs": lp["token_logprobs"][1:],
                          "top_logprobs": lp["top_logprobs"][1:]}
                assert len({len(v) for v in choice["logprobs"].values()}) == 1, choice["logprobs"]
                choice["logprobs"] = lp
            choices.append(choice)
        relaxed = {**payload, "choices": choices}
    assert_valid("CreateCompletionResponse", relaxed, COMPLETIONS_SCHEMA_FILE)
