"""``python -m server``: settings → model → HTTP up at once → engine loads in the background.

One API process (the default) runs in this process (``server/serving.py``: SIGTERM drains, an
engine that fails exits 3). With ``api_processes`` > 1 this process becomes the supervisor of
one engine core and that many API processes sharing the port (``server/multiproc.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

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

    several = settings.api_processes > 1
    setup_logging(settings.log_level, settings.log_format, "supervisor" if several else None)
    log = logging.getLogger("server")

    from server.engine.vllm_engine import VllmEngine
    from server.model import load_model_info
    from server.runconfig import engine_config
    from server.state import ServerState

    try:
        model = load_model_info(settings)
        keys = settings.resolved_api_keys()
        config = engine_config(settings, model)
        if several:
            from server.responses.store import open_store

            open_store(settings)  # a malformed responses_store fails here, not in each process
        state = None if several else ServerState(settings=settings, model=model, api_keys=keys)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not keys:
        log.warning("no API keys configured: every /v1 route is open to anyone who can reach "
                    "port %d (set MSERVE_API_KEYS or api_key_file)", settings.port)
    if model.embedded:
        log.warning("serving the embedded tiny model %r: its weights are random and so is its "
                    "text; pass --model /path/to/weights for a real model", model.id)
    if state is None:
        from server.multiproc import supervise

        return supervise(settings, config)

    from server.serving import run_http

    return run_http(state, lambda: asyncio.to_thread(VllmEngine.start, config))


if __name__ == "__main__":
    sys.exit(main())
