"""Request → one decoding constraint (JSON mode, JSON schema, vLLM ``structured_outputs``).

Bad constraints are the user's mistake: each is a 400 naming the field. What the engine
compiles (grammars, regexes vLLM's backend rejects) is checked again there and mapped to 400.
"""

from __future__ import annotations

import re
from typing import Any

from server.chat import schemas
from server.chat.enforce import for_generation
from server.engine.base import Constraint
from server.errors import InvalidRequest
from server.model import ModelInfo
from server.protocol import ChatCompletionRequest

_KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")


def _checked_schema(schema: Any, param: str, backend: str) -> dict[str, Any]:
    """The schema to generate with: valid, enforceable by ``backend``, objects closed."""
    if not isinstance(schema, dict):
        raise InvalidRequest("The JSON schema must be an object.", param=param)
    problem = schemas.problem(schema)
    if problem is not None:
        raise InvalidRequest(f"Invalid JSON schema: {problem}.", param=param)
    return for_generation(schema, backend, param)


def _from_structured_outputs(req: ChatCompletionRequest, compact: bool, backend: str) -> Constraint:
    so = req.structured_outputs
    assert so is not None
    given = {
        "json": so.json_, "regex": so.regex, "choice": so.choice, "grammar": so.grammar,
        "json_object": so.json_object or None, "structural_tag": so.structural_tag,
    }
    kinds = [k for k in _KINDS if given[k] is not None]
    if len(kinds) != 1:
        what = "none" if not kinds else ", ".join(kinds)
        raise InvalidRequest(
            f"'structured_outputs' needs exactly one of {', '.join(_KINDS)}; got {what}.",
            param="structured_outputs")
    if so.whitespace_pattern is not None or so.disable_additional_properties is not None or (
            so.disable_any_whitespace is not None and so.disable_any_whitespace != compact):
        raise InvalidRequest(
            "JSON whitespace and additional-properties handling are server settings here "
            f"(compact_json={str(compact).lower()}); drop these structured_outputs options.",
            param="structured_outputs")
    kind = kinds[0]
    value = given[kind]
    param = f"structured_outputs.{kind}"
    if kind == "json":  # a string was parsed with the body's budgets (protocol.check_budgets)
        value = _checked_schema(value, param, backend)
    elif kind == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise InvalidRequest(f"The regex does not compile: {exc}.", param=param) from None
    elif kind == "choice":
        if not value or any(not isinstance(c, str) or c == "" for c in value):
            raise InvalidRequest("'choice' must be a non-empty list of non-empty strings.", param=param)
    elif kind == "grammar" and not value.strip():
        raise InvalidRequest("The grammar is empty.", param=param)
    elif kind == "structural_tag" and isinstance(value, dict):
        import json

        value = json.dumps(value)
    return Constraint(kind, value, compact_json=compact)


def constraint_for(req: ChatCompletionRequest, model: ModelInfo, *, compact_json: bool) -> Constraint | None:
    rf = req.response_format
    wants_format = rf is not None and rf.type != "text"
    if wants_format and req.structured_outputs is not None:
        raise InvalidRequest("Use either 'response_format' or 'structured_outputs', not both.",
                             param="structured_outputs")
    if req.structured_outputs is not None:
        return _from_structured_outputs(req, compact_json, model.structured_backend)
    if not wants_format:
        return None
    assert rf is not None
    if rf.type == "json_object":
        return Constraint("json_object", True, compact_json=compact_json)
    assert rf.json_schema is not None
    schema = rf.json_schema.schema_ or {"type": "object"}
    schema = _checked_schema(schema, "response_format.json_schema.schema", model.structured_backend)
    return Constraint("json", schema, compact_json=compact_json)
