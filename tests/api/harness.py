"""The real app, in-process, over the scripted FakeEngine."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from server.app import create_app
from server.engine.fake import FakeEngine, Script
from server.model import load_model_info
from server.settings import Settings
from server.state import ServerState

MODEL = "mistralai/Mistral-7B-Instruct-v0.3"


def text_tokens(tokenizer: Any, text: str, eos: bool = True) -> list[int]:
    inner = tokenizer.instruct_tokenizer.tokenizer
    return inner.encode(text, bos=False, eos=eos)


@contextmanager
def serve(model_dir: Path, script: Script, *, engine: FakeEngine | None = None,
          **settings: Any) -> Iterator[tuple[TestClient, FakeEngine]]:
    opts: dict[str, Any] = {"model": str(model_dir), "served_model_name": MODEL,
                            "responses_store": "off"}  # tests that use the store pass their own
    opts.update(settings)
    config = Settings(**opts)
    model = load_model_info(config)
    fake = engine or FakeEngine(script, max_model_len=config.max_model_len or 4096)

    async def factory() -> FakeEngine:
        return fake

    state = ServerState(settings=config, model=model, api_keys=config.resolved_api_keys())
    app = create_app(state, factory)
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 30
        while state.phase == "loading" and time.monotonic() < deadline:
            time.sleep(0.01)  # vision models warm up with one image request first
        fake.requests.clear()  # the fake's records start when the server is ready
        fake.images.clear()
        yield client, fake


def sse_events(response: Any) -> list[Any]:
    """Parse an SSE body into JSON payloads (and the literal "[DONE]"), checking the framing."""
    text = response.text if hasattr(response, "text") else response
    assert text.endswith("\n\n"), text[-50:]
    events = []
    for frame in text.split("\n\n"):
        if not frame or frame.startswith(":"):
            continue
        assert frame.startswith("data: "), frame
        assert "\nevent:" not in frame and not frame.startswith("event:")
        payload = frame[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
