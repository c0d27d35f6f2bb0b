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


def _section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


MESSAGES_SECTION = "Anthropic Messages API and Claude Code"
COMPLETIONS_SECTION = "Text completions and the tokenizer"
CHAT_README = README
for _title in (MESSAGES_SECTION, COMPLETIONS_SECTION):  # these sections run whole below
    CHAT_README = CHAT_README.replace(_section(_title), "")
BODIES = [m.group(1) for m in re.finditer(r"-d '(\{.*?\})'", CHAT_README, re.S)
          if '"messages"' in m.group(1)]  # chat bodies; the Responses section runs whole below too


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


def test_readme_image_examples_work(v11_vision_server, tmp_path):
    """The Images section's curl script and SDK snippets, run as written on a tiny vision model."""
    import subprocess
    import sys

    from tests.api.test_images import picture

    section = _section("Images")
    (tmp_path / "photo.jpg").write_bytes(picture(21, (120, 90), "JPEG"))
    model = httpx.get(v11_vision_server.url + "/v1/models").json()["data"][0]["id"]
    (shell,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    env = {**__import__("os").environ, "MISTRAL_BASE_URL": v11_vision_server.url + "/v1",
           "MISTRAL_MODEL": model}
    out = subprocess.run(["bash", "-c", shell.replace("curl -X", "curl -sS -X")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert_valid("CreateChatCompletionResponse", data)
    assert data["usage"]["prompt_tokens"] > 20  # the image's grid is in the prompt
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(snippets) == 2
    for code in snippets:
        code = (code.replace('"tiny-mistral"', json.dumps(model))
                .replace("http://localhost:8000", v11_vision_server.url)
                .replace("max_tokens=256", "max_tokens=8"))
        run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                             text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stdout.endswith("\n")  # the reply was printed (the SDK raises on errors)


def test_readme_responses_examples_work(tiny_server, tmp_path):
    """The Responses API section's curl script and SDK snippet, run as written."""
    import subprocess
    import sys

    from tests.spec import assert_valid_response

    section = _section("Responses API")
    model = httpx.get(tiny_server.url + "/v1/models").json()["data"][0]["id"]
    (shell,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    env = {**__import__("os").environ, "MISTRAL_BASE_URL": tiny_server.url + "/v1",
           "MISTRAL_MODEL": model}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", shell.replace("curl -sS", "curl -sSf")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first = json.loads((tmp_path / "first.json").read_text())
    assert_valid_response("Response", first)
    decoder, text, objects = json.JSONDecoder(), out.stdout.strip(), []
    while text:
        obj, end = decoder.raw_decode(text)
        objects.append(obj)
        text = text[end:].strip()
    second, stored, items, deleted = objects
    assert second["previous_response_id"] == first["id"]
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    assert stored == first
    assert items["data"][0]["content"][0]["text"] == "What is the capital of France?"
    assert deleted == {"id": first["id"], "object": "response", "deleted": True}
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    code = code.replace('"tiny-mistral"', json.dumps(model)).replace("http://localhost:8000", tiny_server.url)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "name=" in run.stdout.splitlines()[-1]  # the parsed City was printed


def test_readme_messages_examples_work(tiny_server, tmp_path):
    """The Messages API section's curl script and SDK snippet, run as written (its Claude Code
    block runs in tests/e2e/test_messages_e2e.py)."""
    import subprocess
    import sys

    from tests.anthropic_spec import assert_count, assert_message

    section = _section(MESSAGES_SECTION)
    model = httpx.get(tiny_server.url + "/v1/models").json()["data"][0]["id"]
    shell = re.findall(r"```bash\n(.*?)```", section, re.S)[0]
    env = {**__import__("os").environ, "MISTRAL_BASE_URL": tiny_server.url + "/v1",
           "MISTRAL_MODEL": model}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", shell.replace("curl -sS", "curl -sSf")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    decoder, text, objects = json.JSONDecoder(), out.stdout.strip(), []
    while text:
        obj, end = decoder.raw_decode(text)
        objects.append(obj)
        text = text[end:].strip()
    message, count = objects
    assert_message(message)
    assert message["model"] == model
    assert 0 < assert_count(count) < message["usage"]["input_tokens"]  # no system prompt
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    code = code.replace('"tiny-mistral"', json.dumps(model)).replace("http://localhost:8000", tiny_server.url)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("toolu_")  # the forced call's id, then its input
    assert lines[-1] in ("end_turn", "max_tokens", "tool_use")


def test_readme_completions_examples_work(tiny_server, tmp_path):
    """The text-completions section's curl script and SDK snippet, run as written."""
    import subprocess
    import sys

    from tests.spec import assert_valid_completion

    section = _section(COMPLETIONS_SECTION)
    model = httpx.get(tiny_server.url + "/v1/models").json()["data"][0]["id"]
    (shell,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    env = {**__import__("os").environ, "MISTRAL_BASE_URL": tiny_server.url + "/v1",
           "MISTRAL_MODEL": model}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", shell.replace("curl -sS", "curl -sSf")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    decoder, text, objects = json.JSONDecoder(), out.stdout.strip(), []
    while text:
        obj, end = decoder.raw_decode(text)
        objects.append(obj)
        text = text[end:].strip()
    plain, scored, tokens, chat_tokens, detok = objects
    for body in (plain, scored):
        assert_valid_completion(body)
    assert scored["choices"][0]["text"] == "Paris is in France."
    assert scored["choices"][0]["logprobs"]["token_logprobs"][0] is None
    assert tokens["count"] == len(tokens["tokens"]) and chat_tokens["count"] > tokens["count"] - 3
    assert detok == {"prompt": "Hello, world"}
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    code = code.replace('"tiny-mistral"', json.dumps(model)).replace("http://localhost:8000", tiny_server.url)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.stdout.splitlines()) >= 3
