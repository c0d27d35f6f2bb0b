"""What a constrained request costs the first time and the second time, and what it costs others.

    # start our server on the tiny v3 (xgrammar) and v11 (llguidance) models, measure, print
    .venv/bin/python scripts/bench_grammar.py

    # the same against vLLM's own server too, and write the table into docs/performance.md
    .venv/bin/python scripts/bench_grammar.py --vllm --write-docs

    # against any running server
    .venv/bin/python scripts/bench_grammar.py --base-url http://127.0.0.1:8000 --model tiny

    # in-process, no HTTP: our validation time vs the engine's, per request
    .venv/bin/python scripts/bench_grammar.py --in-process --write-docs

Per server, while one unconstrained stream runs in the background and ``/health`` is polled
every few milliseconds, it sends one-token requests in phases: plain (no constraint), large
JSON schemas seen for the first time (three different ones), the same schema again, then 10 tools (``auto``, which pays
the long prompt) and the same tools with ``tool_choice: "required"`` (a grammar over every tool's
parameters) for the first time and again. For each phase it reports the request latency, the
worst ``/health`` answer time (is the event loop free?) and the longest pause of the background
stream (are other requests held up?).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import start, stop, wait_ready  # noqa: E402

REPEATS = 5  # requests per repeated phase
FIRSTS = 3  # distinct never-seen schemas / tool sets per first-time phase


def big_schema(tag: str, objects: int = 25, fields: int = 12) -> dict:
    """``objects`` nested objects of ``fields`` enum fields (6 values each): ~44 KB by default."""
    props = {}
    for i in range(objects):
        inner = {f"f{j}": {"type": "string", "enum": [f"{tag}{i}_{j}_{k}" for k in range(6)]}
                 for j in range(fields)}
        props[f"o{i}"] = {"type": "object", "properties": inner, "required": list(inner),
                          "additionalProperties": False}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def many_tools(tag: str, count: int = 10) -> list[dict]:
    tools = []
    for i in range(count):
        params = {"type": "object", "properties": {
            f"p{j}": {"type": "string", "enum": [f"{tag}{i}{j}{k}" for k in range(3)]} for j in range(5)},
            "required": [f"p{j}" for j in range(5)]}
        tools.append({"type": "function", "function": {
            "name": f"tool_{i}", "description": f"Tool number {i}.", "parameters": params}})
    return tools


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    health_worst: float = 0.0
    stream_gap: float = 0.0
    errors: int = 0


class Watch:
    """Background /health polling and one long unconstrained stream, with timestamps."""

    def __init__(self, base: str, model: str, headers: dict[str, str]) -> None:
        self.base, self.model, self.headers = base, model, headers
        self.health: list[tuple[float, float]] = []  # (sent, answer time)
        self.arrivals: list[float] = []
        self.running = True

    async def poll_health(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            while self.running:
                sent = time.perf_counter()
                await client.get("/health")
                self.health.append((sent, time.perf_counter() - sent))
                await asyncio.sleep(0.005)

    async def stream(self) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": 3000, "ignore_eos": True, "stream": True}
        async with httpx.AsyncClient(base_url=self.base, timeout=None) as client:
            while self.running:
                async with client.stream("POST", "/v1/chat/completions", json=body,
                                         headers=self.headers) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            self.arrivals.append(time.perf_counter())
                        if not self.running:
                            break

    def window(self, phase: Phase, t0: float, t1: float) -> None:
        answers = [dt for sent, dt in self.health if t0 <= sent + dt and sent <= t1]
        phase.health_worst = max(answers, default=0.0)
        arrivals = [t for t in self.arrivals if t0 <= t <= t1]
        before = [t for t in self.arrivals if t < t0]
        points = ([before[-1]] if before else []) + arrivals
        phase.stream_gap = max((b - a for a, b in zip(points, points[1:])), default=0.0)


async def one(client: httpx.AsyncClient, body: dict, phase: Phase) -> None:
    t = time.perf_counter()
    r = await client.post("/v1/chat/completions", json=body)
    phase.latencies.append(time.perf_counter() - t)
    if r.status_code != 200:
        phase.errors += 1
        print(f"  {phase.name}: HTTP {r.status_code} {r.text[:200]}", file=sys.stderr)


async def measure(base: str, model: str, api_key: str | None) -> list[Phase]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    tags = [uuid.uuid4().hex[:6] for _ in range(FIRSTS)]  # fresh: never seen by this server
    msg = [{"role": "user", "content": "Fill in the form."}]
    plain = {"model": model, "messages": msg, "max_tokens": 1}
    schema = [{**plain, "response_format": {"type": "json_schema", "json_schema": {
        "name": "form", "schema": big_schema(tag), "strict": True}}} for tag in tags]
    auto = [{**plain, "tools": many_tools(tag), "tool_choice": "auto"} for tag in tags]
    forced = [{**body, "tool_choice": "required"} for body in auto]
    phases = [("plain", [plain] * REPEATS), ("schema, first", schema), ("schema, again", schema[-1:] * REPEATS),
              # the first tools request pays the ~2,700-token prompt; the forced ones reuse its prefix
              ("10 tools, auto, first", auto), ("10 tools, required, first", forced),
              ("10 tools, required, again", forced[-1:] * REPEATS)]
    watch = Watch(base, model, headers)
    results = []
    async with httpx.AsyncClient(base_url=base, timeout=300, headers=headers) as client:
        for _ in range(3):
            await one(client, plain, Phase("warm-up"))
        tasks = [asyncio.create_task(watch.poll_health()), asyncio.create_task(watch.stream())]
        await asyncio.sleep(2)  # the stream is flowing
        try:
            for name, bodies in phases:
                phase = Phase(name)
                t0 = time.perf_counter()
                for body in bodies:
                    await one(client, body, phase)
                watch.window(phase, t0, time.perf_counter())
                results.append(phase)
                await asyncio.sleep(0.5)
        finally:
            watch.running = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return results


HEADER = ("| server | model | request | latency ms (median) | worst /health ms | longest stream pause ms |"
          "\n|---|---|---|---|---|---|")


def rows(server: str, kind: str, phases: list[Phase]) -> list[str]:
    return [f"| {server} | {kind} | {p.name} | {statistics.median(p.latencies) * 1000:.0f}"
            f"{' (' + str(p.errors) + ' errors)' if p.errors else ''} | {p.health_worst * 1000:.0f} | "
            f"{p.stream_gap * 1000:.0f} |" for p in phases]


def run_local(kinds: list[str], with_vllm: bool) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from server.tinymodel import FORMAT, build_tiny_model

    lines = []
    for kind in kinds:
        model_dir = build_tiny_model(ROOT / ".cache" / f"bench-tiny-{kind}-f{FORMAT}", kind)
        servers = [("ours", 18011)] + ([("vllm", 18012)] if with_vllm else [])
        for server, port in servers:
            proc = start(server, model_dir, port, ROOT / ".cache" / f"bench-grammar-{server}.log")
            try:
                wait_ready(f"http://127.0.0.1:{port}", proc)
                phases = asyncio.run(measure(f"http://127.0.0.1:{port}", "tiny", None))
            finally:
                stop(proc)
            label = "ours" if server == "ours" else "vLLM api_server"
            for line in rows(label, kind, phases):
                print(line, flush=True)
                lines.append(line)
    return lines


BREAKDOWN_HEADER = ("| model (backend) | request | our validation + render ms | engine ms (vLLM frontend + core) |"
                    "\n|---|---|---|---|")


async def breakdown(kind: str) -> list[str]:
    """In-process, no HTTP and no background load: where a constrained request's time goes."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB, as bench.start gives the servers
    from server.chat.service import ChatService
    from server.engine.vllm_engine import VllmEngine
    from server.model import load_model_info
    from server.protocol import parse_request
    from server.runconfig import engine_config
    from server.settings import Settings

    settings = Settings(tiny_tokenizer=kind, max_model_len=4096, dtype="float32")
    model = load_model_info(settings)
    config = engine_config(settings, model)
    engine = await asyncio.to_thread(VllmEngine.start, config)
    await engine.warm_up()
    service = ChatService(model, engine, max_logprobs=20, max_n=8, compact_json=True)
    times: dict[str, list[tuple[float, float]]] = {}

    async def one(name: str, body: dict) -> None:
        t0 = time.perf_counter()
        prepared = await service.prepare(parse_request(body, headers={}))
        t1 = time.perf_counter()
        await service.complete(prepared)
        times.setdefault(name, []).append((t1 - t0, time.perf_counter() - t1))

    plain = {"model": model.id, "messages": [{"role": "user", "content": "Fill in the form."}], "max_tokens": 1}
    try:
        for _ in range(REPEATS):
            await one("plain", plain)
        for objects, fields in ((25, 12), (1, 8)):
            for _ in range(FIRSTS):
                schema = big_schema(uuid.uuid4().hex[:6], objects, fields)
                size = f"{len(json.dumps(schema)) / 1000:.0f} KB"
                body = {**plain, "response_format": {"type": "json_schema", "json_schema": {
                    "name": "form", "schema": schema}}}
                await one(f"{size} schema, first", body)
                for _ in range(REPEATS):
                    await one(f"{size} schema, again", body)
    finally:
        await engine.shutdown()
    label = f"{kind} ({config.structured_backend})"
    return [f"| {label} | {name} | {statistics.median(t[0] for t in ts) * 1000:.1f} | "
            f"{statistics.median(t[1] for t in ts) * 1000:.0f} |" for name, ts in times.items()]


def write_docs(name: str, header: str, lines: list[str]) -> None:
    path = ROOT / "docs" / "performance.md"
    text = path.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    table = f"{begin}\n{header}\n" + "\n".join(lines) + f"\n{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + table + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + table + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base-url", help="measure this running server instead of starting ours")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--api-key")
    parser.add_argument("--tokenizers", nargs="+", default=["v3-spm", "v11-tekken"])
    parser.add_argument("--vllm", action="store_true", help="also start and measure vLLM's own server")
    parser.add_argument("--in-process", action="store_true",
                        help="our validation vs the engine's time per request, without HTTP or load")
    parser.add_argument("--write-docs", action="store_true", help="put the table into docs/performance.md")
    args = parser.parse_args()
    if args.in_process:
        print(BREAKDOWN_HEADER)
        lines = []
        for kind in args.tokenizers:
            for line in asyncio.run(breakdown(kind)):
                print(line, flush=True)
                lines.append(line)
        if args.write_docs:
            write_docs("bench_grammar_in_process", BREAKDOWN_HEADER, lines)
        return
    print(HEADER)
    if args.base_url:
        lines = rows(args.base_url, args.model, asyncio.run(measure(args.base_url, args.model, args.api_key)))
        print("\n".join(lines))
    else:
        lines = run_local(args.tokenizers, args.vllm)
    if args.write_docs:
        write_docs("bench_grammar", HEADER, lines)


if __name__ == "__main__":
    main()
