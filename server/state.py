"""Server lifecycle: HTTP is up before the engine; readiness follows the engine's phase.

    loading ──engine up──▶ ready ──SIGTERM──▶ draining ──in-flight done (or timeout)──▶ exit 0
       │                     │
       └──engine fails───────┴──▶ failed ──▶ exit 3 (the orchestrator restarts the pod)

With several API processes each has its own phase, and what readiness, ``/status`` and
``mserve:startup_phase`` report is the server's (``server/shared.py``): failed if any process
failed, draining if any drains, loading until every process is ready.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from server import metrics
from server.admission import Admission
from server.anthropic.service import MessagesService
from server.budgets import Budgets
from server.chat import schemas
from server.chat.images import ImageLimits
from server.chat.service import ChatService
from server.completions.service import CompletionService
from server.responses.service import ResponsesService, StoredResponses
from server.responses.store import ResponseStore, open_store
from server.engine.base import EngineClient
from server.errors import Unavailable
from server.model import ModelInfo
from server.settings import Settings
from server.shared import Phase, ServerShare

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Awaitable[EngineClient]]


@dataclass
class ServerState:
    settings: Settings
    model: ModelInfo
    api_keys: list[str]
    phase: Phase = "loading"
    engine: EngineClient | None = None
    service: ChatService | None = None
    responses: ResponsesService | None = None
    messages: MessagesService | None = None
    completions: CompletionService | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    on_fatal: Callable[[str], None] | None = None  # ends the process (non-zero) on engine death
    share: ServerShare | None = None  # the other API processes of this server, if any
    admission: Admission = field(init=False)
    budgets: Budgets = field(init=False)  # what one request may cost (server/budgets.py)
    store: ResponseStore | None = field(init=False)  # stored responses (/v1/responses)
    stored: StoredResponses = field(init=False)  # their read side, up before the engine

    def __post_init__(self) -> None:
        self.store = open_store(self.settings)  # a malformed responses_store fails start-up
        self.stored = StoredResponses(self.store)
        self.budgets = Budgets.from_settings(self.settings)
        schemas.configure(self.settings.schema_cache_bytes)
        self.admission = Admission(self.settings.max_inflight_requests,
                                   self.settings.max_queued_requests, shared=self.share)
        self._set_phase("loading")

    def _set_phase(self, phase: Phase) -> None:
        self.phase = phase
        if self.share is not None:
            self.share.set_phase(phase)
        metrics.set_phase(phase)

    @property
    def server_phase(self) -> Phase:
        """The whole server's phase (this process's own when it is the only one)."""
        return self.phase if self.share is None else self.share.server_phase()

    async def load(self, factory: EngineFactory) -> None:
        log.info("loading engine for %s", self.model.id)
        try:
            engine = await factory()
            self.engine = engine
            await engine.warm_up()
        except Exception as exc:  # noqa: BLE001 - reported through readiness and the log
            log.exception("engine failed to start")
            self.fail(str(exc) or type(exc).__name__)
            return
        self.admission.batch_capacity = getattr(engine, "max_num_seqs", 256)
        self.service = ChatService(
            self.model, engine,
            max_logprobs=self.settings.max_logprobs,
            max_n=self.settings.max_n,
            compact_json=self.settings.compact_json,
            request_timeout=self.settings.request_timeout,
            on_engine_dead=self.fail,
            image_limits=ImageLimits.from_settings(self.settings),
            budgets=self.budgets,
        )
        self.responses = ResponsesService(self.service, self.store)
        self.messages = MessagesService(self.service,
                                        accept_claude_models=self.settings.accept_claude_models)
        self.completions = CompletionService(
            self.service, max_choices=self.settings.max_completion_choices)
        await self.service.warm_up()
        # Startup objects (tokenizer tables, vLLM config) never die: keep them out of GC passes.
        # Before reporting ready: the full collection holds the event loop (and, with several
        # API processes, new connections would go to the others meanwhile).
        gc.collect()
        gc.freeze()
        if self.phase == "loading":
            self._set_phase("ready")
        self.ready_at = time.time()
        log.info("engine ready after %.1f s", self.ready_at - self.started_at)

    def fail(self, reason: str) -> None:
        """The engine is gone: readiness fails and the process exits so it is restarted."""
        if self.phase == "failed":
            return
        self._set_phase("failed")
        self.error = reason
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def require_service(self) -> ChatService:
        if self.phase == "ready" and self.service is not None:
            return self.service
        if self.phase == "loading":
            raise Unavailable("The model is still loading; retry shortly.", code="model_loading",
                              headers={"Retry-After": "5"})
        if self.phase == "draining":
            raise Unavailable("The server is shutting down; retry on another replica.",
                              code="server_draining", headers={"Retry-After": "1"})
        raise Unavailable("The inference engine is not available.", code="engine_unavailable")

    async def drain(self, timeout: float) -> None:
        """Refuse new work, let in-flight requests finish, end the rest with an error."""
        if self.phase != "failed":
            self._set_phase("draining")
        log.info("draining: %d request(s) in flight, up to %.0f s", self.admission.inflight, timeout)
        if not await self.admission.wait_idle(timeout) and self.service is not None:
            log.warning("drain timeout: ending %d request(s)", self.admission.inflight)
            self.service.stop()
            await self.admission.wait_idle(5)
        log.info("drained")

    async def shutdown(self) -> None:
        if self.store is not None:
            await self.store.close()
        if self.engine is not None:
            await self.engine.shutdown()

