"""``python -m server``: settings → model → HTTP up at once → engine loads in the background.

SIGTERM drains: readiness flips to 503, new requests get 503 + Retry-After, in-flight requests
get ``drain_timeout`` seconds, then the rest end with an error and the process exits 0. A
second signal exits at once. An engine that fails makes the process exit 3.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from server.settings import SettingsError, describe, load_settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings, sources, print_config = load_settings(argv)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if print_config:
        print(describe(settings, sources))
        return 0
    if settings.log_format == "json":
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM's lines go through ours
    from server.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    log = logging.getLogger("server")

    import uvicorn

    from server.app import create_app
    from server.engine.vllm_engine import VllmEngine
    from server.model import load_model_info
    from server.runconfig import engine_config
    from server.state import ServerState

    try:
        model = load_model_info(settings)
        keys = settings.resolved_api_keys()
        config = engine_config(settings, model)
        state = ServerState(settings=settings, model=model, api_keys=keys)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not keys:
        log.warning("no API keys configured: every /v1 route is open to anyone who can reach "
                    "port %d (set MSERVE_API_KEYS or api_key_file)", settings.port)
    if model.embedded:
        log.warning("serving the embedded tiny model %r: its weights are random and so is its "
                    "text; pass --model /path/to/weights for a real model", model.id)
    app = create_app(state, lambda: asyncio.to_thread(VllmEngine.start, config))

    class DrainingServer(uvicorn.Server):
        draining = False

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.draining or state.phase in ("loading", "failed"):
                super().handle_exit(sig, frame)  # nothing to drain, or a second signal
                return
            self.draining = True
            asyncio.get_event_loop().create_task(self._drain())

        async def _drain(self) -> None:
            await state.drain(settings.drain_timeout)
            self.should_exit = True

    server = DrainingServer(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        access_log=False, log_config=None, timeout_graceful_shutdown=5))
    exit_code = 0

    def on_fatal(reason: str) -> None:
        nonlocal exit_code
        log.error("engine failed (%s): exiting so the orchestrator restarts the server", reason)
        exit_code = 3
        server.should_exit = True

    state.on_fatal = on_fatal
    server.run()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
