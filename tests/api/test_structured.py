"""Structured-output requests become exactly one engine constraint (or a clear 400)."""

from __future__ import annotations

import pytest

from tests.api.harness import MODEL, serve, text_tokens
from tests.conftest import tokenizer_for

BASE = {"model": MODEL, "messages": [{"role": "user", "content": "json please"}]}
SCHEMA = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
# What the engine generates with: objects closed where the schema leaves them open.
CLOSED = {**SCHEMA, "additionalProperties": False}


@pytest.mark.parametrize("patch, kind, value", [
    ({"response_format": {"type": "json_object"}}, "json_object", True),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}},
     "json", CLOSED),
    ({"structured_outputs": {"json": SCHEMA}}, "json", CLOSED),
    ({"structured_outputs": {"regex": "[0-9]+"}}, "regex", "[0-9]+"),
    ({"structured_outputs": {"choice": ["a", "b"]}}, "choice", ["a", "b"]),
    ({"structured_outputs": {"grammar": "root ::= \"a\""}}, "grammar", "root ::= \"a\""),
    ({"structured_outputs": {"structural_tag": {"type": "structural_tag", "structures": [], "triggers": []}}},
     "structural_tag", '{"type": "structural_tag", "structures": [], "triggers": []}'),
    ({"guided_choice": ["x", "y"]}, "choice", ["x", "y"]),
    ({"guided_json": SCHEMA, "guided_decoding_backend": "xgrammar"}, "json", CLOSED),
    ({"response_format": {"type": "text"}}, None, None),
])
def test_constraint_reaches_engine(tokenizer_dirs, patch, kind, value):
    directory = tokenizer_dirs["v3-spm"]
    tok = tokenizer_for(directory)
    with serve(directory, lambda p, s, i: text_tokens(tok, '{"a":true}')) as (client, fake):
        r = client.post("/v1/chat/completions", json={**BASE, **patch})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == '{"a":true}'
    constraint = fake.requests[0][1].constraint
    if kind is None:
        assert constraint is None
    else:
        assert (constraint.kind, constraint.value, constraint.compact_json) == (kind, value, True)
