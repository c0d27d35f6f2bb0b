"""What several API processes share (``server/shared.py``) and what each makes of it: the
server's phase, admission limits that hold across processes, the least loaded process taking
new connections, the failure reported once, metrics rendered for the whole server."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from server.admission import Admission
from server.errors import Overloaded
from server.logs import JsonFormatter, setup_logging
from server.settings import SettingsError, load_settings
from server.shared import NOT_ACCEPTING, SharedServer

ROOT = Path(__file__).resolve().parents[2]
SPAWN = multiprocessing.get_context("spawn")


def shared(processes: int = 2) -> SharedServer:
    return SharedServer.create(processes, SPAWN)


def test_the_servers_phase_is_its_least_ready_process() -> None:
    server = shared(3)
    first, second, third = (server.for_process(i) for i in range(3))
    assert server.server_phase() == "loading"
    first.set_phase("ready")
    second.set_phase("ready")
    assert server.server_phase() == "loading"  # until every process is ready
    third.set_phase("ready")
    assert server.server_phase() == "ready"
    second.set_phase("draining")
    assert third.server_phase() == "draining"
    first.set_phase("failed")
    assert second.server_phase() == "failed"
    with pytest.raises(ValueError):
        server.for_process(3)


def test_admission_limits_count_every_process() -> None:
    server = shared(2)
    a = Admission(max_inflight=3, shared=server.for_process(0))
    b = Admission(max_inflight=3, shared=server.for_process(1))
    a.admit()
    a.admit()
    b.admit()
    with pytest.raises(Overloaded):
        b.admit()
    with pytest.raises(Overloaded):
        a.admit()
    assert (a.inflight, b.inflight, a.server_inflight) == (2, 1, 3)
    a.release()
    b.admit()  # the slot process 0 gave back
    assert (a.inflight, b.inflight, b.server_inflight) == (1, 2, 3)


def test_queue_limit_counts_every_process() -> None:
    server = shared(2)
    a = Admission(max_queued=1, batch_capacity=2, shared=server.for_process(0))
    b = Admission(max_queued=1, batch_capacity=2, shared=server.for_process(1))
    a.admit()
    b.admit()  # the batch is full
    a.admit()  # one queued
    with pytest.raises(Overloaded):
        b.admit()


def _hammer(server: SharedServer, index: int, cap: int, rounds: int, over: Any) -> None:
    admission = Admission(max_inflight=cap, shared=server.for_process(index))
    for _ in range(rounds):
        try:
            admission.admit()
        except Overloaded:
            continue
        if server.total_inflight() > cap:
            over.value += 1
        admission.release()


def test_the_cap_holds_under_contention_between_processes() -> None:
    """Four processes taking and giving back slots as fast as they can never exceed the cap."""
    server = shared(4)
    over = SPAWN.Value("i", 0)
    procs = [SPAWN.Process(target=_hammer, args=(server, i, 1, 50_000, over)) for i in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert over.value == 0
    assert server.total_inflight() == 0


def test_a_new_connection_goes_to_the_least_loaded_process() -> None:
    server = shared(2)
    a, b = server.for_process(0), server.for_process(1)
    a.publish_connections(0)
    assert a.least_connections()  # b is not accepting yet
    b.publish_connections(0)
    assert a.least_connections() and b.least_connections()
    a.publish_connections(3)
    assert not a.least_connections() and b.least_connections()
    b.stop_accepting()
    assert a.least_connections() and server.connections[1] == NOT_ACCEPTING


def _claim(server: SharedServer, results: Any, index: int) -> None:
    results[index] = server.claim_failure()


def test_the_failure_is_claimed_once_across_processes() -> None:
    server = shared(2)
    results = SPAWN.Array("b", 4)
    procs = [SPAWN.Process(target=_claim, args=(server, results, i)) for i in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert sorted(results[:]) == [0, 0, 0, 1]
    assert not server.claim_failure()


def test_describe_lists_every_process() -> None:
    server = shared(2)
    a = server.for_process(0)
    a.started(1234)
    a.set_phase("ready")
    assert a.describe() == [{"pid": 1234, "phase": "ready", "inflight_requests": 0},
                            {"pid": 0, "phase": "loading", "inflight_requests": 0}]


METRICS_SCRIPT = textwrap.dedent("""
    import multiprocessing, sys
    from server import metrics
    from server.admission import Admission
    from server.shared import SharedServer

    def serve(server, index, requests):
        share = server.for_process(index)
        metrics.use_multiprocess(share)
        share.set_phase("ready")
        admission = Admission(shared=share)
        for _ in range(requests):
            metrics.REQUESTS.labels(status="200").inc()
        admission.admit()  # one still in flight in each process

    if __name__ == "__main__":
        spawn = multiprocessing.get_context("spawn")
        server = SharedServer.create(2, spawn)
        for index, requests in ((0, 3), (1, 4)):
            p = spawn.Process(target=serve, args=(server, index, requests))
            p.start()
            p.join()
        metrics.use_multiprocess(server.for_process(0))
        sys.stdout.write(metrics.render()[0].decode())
""")


def test_metrics_render_the_whole_server(tmp_path: Path) -> None:
    """Counters summed over processes (not multiplied, not split), in-flight summed, the phase
    the server's."""
    script = tmp_path / "metrics_two_processes.py"
    script.write_text(METRICS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    lines = dict(line.rsplit(" ", 1) for line in out.splitlines() if line and line[0] != "#")
    assert float(lines['mserve:requests_total{status="200"}']) == 7
    assert float(lines["mserve:requests_inflight"]) == 2
    assert float(lines['mserve:startup_phase{phase="ready"}']) == 1
    assert float(lines['mserve:startup_phase{phase="loading"}']) == 0


def test_api_processes_setting() -> None:
    settings, sources, _ = load_settings(["--api-processes", "4"], env={})
    assert settings.api_processes == 4 and sources["api_processes"] == "cli"
    assert load_settings([], env={"MSERVE_API_PROCESSES": "2"})[0].api_processes == 2
    assert load_settings([], env={})[0].api_processes == 1
    with pytest.raises(SettingsError, match="api_processes"):
        load_settings(["--api-processes", "0"], env={})


def test_log_lines_name_their_process(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", "text", "api-1")
        logging.getLogger("server.test").info("hello")
        record = logging.LogRecord("server.test", logging.INFO, __file__, 1, "hi", None, None)
        root.handlers[0].filter(record)
        assert json.loads(JsonFormatter().format(record))["process"] == "api-1"
        setup_logging("info", "text")  # one process: lines as they always were
        logging.getLogger("server.test").info("plain")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    err = capsys.readouterr().err.splitlines()
    assert "INFO [api-1] server.test [None]: hello" in err[0]
    assert err[1].endswith("INFO server.test [None]: plain")
