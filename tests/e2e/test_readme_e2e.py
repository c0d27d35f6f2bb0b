"""Tested docs: every curl request body in the README runs against the real server."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.e2e.conftest import ROOT
from tests.spec import assert_valid

pytestmark = pytest.mark.e2e

README = (ROOT / "README.md").read_text()
BODIES = [m.group(1) for m in re.finditer(r"-d '(\{.*?\})'", README, re.S)]


def test_readme_has_examples():
    assert len(BODIES) >= 5


@pytest.mark.parametrize("index", range(len(BODIES)))
def test_readme_request_works(tiny_server, index):
    text = BODIES[index].replace('"\'"$MISTRAL_MODEL"\'"', '"x"')
    body = json.loads(text)
    body["model"] = httpx.get(tiny_server.url + "/v1/models").json()["data"][0]["id"]
    body["max_tokens"] = min(body.get("max_tokens", 64), 64)
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()
    assert_valid("CreateChatCompletionResponse", data)
    choice = data["choices"][0]
    content = choice["message"]["content"]
    so = body.get("structured_outputs") or {}
    if "regex" in so:
        assert re.fullmatch(so["regex"], content)
    if "choice" in so:
        assert content in so["choice"]
    rf = body.get("response_format") or {}
    if (rf.get("type") == "json_schema" or "json" in so) and choice["finish_reason"] == "stop":
        json.loads(content)
