"""Logging setup: plain text or one JSON object per line, with the request id on every line.

With several API processes every line also names its process: ``api-0``, ``api-1``… or
``supervisor`` (a ``process`` field in JSON, ``[api-1]`` after the level in text).
"""

from __future__ import annotations

import contextvars
import json
import logging
import time

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_FIELDS = ("method", "path", "status", "duration_ms", "model", "prompt_tokens", "completion_tokens",
           "finish_reason", "stream", "prompt")


class _RequestIdFilter(logging.Filter):
    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        if self.process is not None:
            record.server_process = self.process
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "server_process", None):
            entry["process"] = record.server_process
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id
        for key in _FIELDS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str, process: str | None = None) -> None:
    """``process``: this process's name when the server runs several (``api-0``, ``supervisor``)."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter(process))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        label = f" [{process}]" if process else ""
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s{label} %(name)s [%(request_id)s]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "vllm"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
