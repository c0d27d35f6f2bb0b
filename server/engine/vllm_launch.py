"""vLLM's multi-API-server start-up, for ``api_processes`` > 1 (the supervisor's engine side).

The same steps, in the same order, as ``run_multi_api_server`` in vLLM 0.32's
``vllm/entrypoints/cli/serve.py`` (``vllm serve --api-server-count N``):

1. prometheus_client's multiprocess mode (``setup_multiprocess_prometheus``: a temporary
   ``PROMETHEUS_MULTIPROC_DIR`` that every process started afterwards inherits);
2. the engine configuration with ``_api_process_count = N`` and ``_api_process_rank = -1``;
3. ``bind_engine_zmq_listeners``: this process binds one input and one output ZMQ listener per
   API process, before anything starts;
4. ``launch_core_engines``: the engine core process(es), told those N client addresses;
5. inside it, ``APIServerProcessManager`` spawns the N API processes (our target function), each
   handed its ``client_config``: the listeners it adopts, ``client_count = N``, its
   ``client_index`` and the stats address; each creates its own ``AsyncLLM`` from it
   (``VllmEngine.start(config, client)``);
6. leaving ``launch_core_engines`` waits for the engine core's handshake, and fails if the engine
   core or a watched API process exits first.

Only this module and ``vllm_engine.py`` import vLLM. Watching and stopping the processes is the
supervisor's (``server/multiproc.py``), which needs nothing of vLLM for it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

from server.engine.vllm_engine import EngineConfig, engine_args


class EngineLaunch:
    """The engine core being started for ``clients`` API processes."""

    def __init__(self, started: Any, listeners: Any, clients: int) -> None:
        self._started = started  # vLLM's CoreEngineLaunch
        self._listeners = listeners  # vLLM's EngineZmqListeners
        self._clients = clients
        self._manager: Any = None  # vLLM's APIServerProcessManager

    @property
    def engine_processes(self) -> list[BaseProcess]:
        manager = self._started.engine_manager
        return list(getattr(manager, "processes", []) or [])

    def start_clients(self, target: Callable[..., None], sock: socket.socket, address: str,
                      payload: Any) -> list[BaseProcess]:
        """Spawn the API processes: ``target(address, sock, payload, client_config)`` in each."""
        from vllm.v1.utils import APIServerProcessManager

        coordinator = self._started.coordinator
        self._manager = APIServerProcessManager(
            listen_address=address, sock=sock, args=payload, num_servers=self._clients,
            input_listeners=self._listeners.inputs, output_listeners=self._listeners.outputs,
            target_server_fn=target,
            stats_update_address=coordinator.get_stats_publish_address() if coordinator else None,
            tensor_queue=self._started.tensor_queue)
        # The engine core's start-up fails early if an API process dies while it loads.
        self._started.watched_frontend_processes = self._manager.processes
        return list(self._manager.processes)

    def stop(self, timeout: float) -> None:
        """Whatever API process is left, then the engine core (SIGTERM, then kill)."""
        if self._manager is not None:
            self._manager.shutdown(timeout=timeout)
        if self._listeners is not None:
            self._listeners.cleanup()
            self._listeners = None  # its finaliser runs now, not at interpreter exit
        started, self._started = self._started, None
        if started is not None and started.engine_manager is not None:
            started.engine_manager.shutdown(timeout=timeout)
        if started is not None and started.coordinator is not None:
            started.coordinator.shutdown(timeout=timeout)


@contextlib.contextmanager
def launch(config: EngineConfig, clients: int) -> Iterator[EngineLaunch]:
    """Start the engine core for ``clients`` API processes; start them inside the block. Leaving
    it waits until the engine core is ready (``RuntimeError`` if it or an API process died)."""
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.utils import bind_engine_zmq_listeners, launch_core_engines
    from vllm.v1.executor import Executor
    from vllm.v1.metrics.prometheus import setup_multiprocess_prometheus

    setup_multiprocess_prometheus()
    args = engine_args(config)
    args._api_process_count, args._api_process_rank = clients, -1
    vllm_config = args.create_engine_config(UsageContext.ENGINE_CONTEXT)
    listeners = bind_engine_zmq_listeners(vllm_config, clients)
    addresses = listeners.addresses
    launch = EngineLaunch(None, listeners, clients)
    del listeners  # EngineLaunch.stop cleans them up (their finaliser fails at interpreter exit)
    with launch_core_engines(vllm_config, Executor.get_class(vllm_config), True,
                             addresses) as started:
        launch._started = started
        yield launch
