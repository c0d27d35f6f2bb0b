"""Frontend capacity: the real app over an engine that produces tokens at no cost.

    .venv/bin/python scripts/bench_frontend.py [--concurrency 1 16 64 256] [--duration 15] \
        [--profile] [--write-docs] [--api chat|messages|completions]

The server process is the real app (``create_app``, ``ServerState``, the real tokenizer and
parser of the tiny v3 SentencePiece model) under uvicorn exactly as ``python -m server`` runs it
(uvloop + httptools, access log off, our request log at info), but over ``FakeEngine``: every
request gets a fixed token script, one token per step, each step one ``asyncio.sleep(0)``.
All the CPU the API process spends is therefore the frontend's: HTTP, routing, request parsing
and rendering, the output parser, chunk building, orjson and SSE framing, the event loop.
Unlike vLLM's output collector, the fake never merges steps, so every token is its own frame and
write: the worst case per token.

The load is ``bench.py``'s closed-loop streaming client in a process of its own (64-token
streams with ``ignore_eos`` and usage). Reported per point: output tok/s, streams/s, TTFT and
ITL p50/p99, the API process's CPU µs per output token (``/proc/<pid>/stat``), its CPU share of
one core, and the load generator's. One API process is one Python event loop, i.e. at most one
core: 1e6 / (µs per token) is the most it can stream.

``--profile``: py-spy samples the server at concurrency 64 for 15 s (installed into the venv
from PyPI if missing); prints the top functions by inclusive and self time and the self time by
bucket. If py-spy cannot attach, the server is restarted under cProfile instead
(``BENCH_CPROFILE=<file>``). ``--write-docs`` puts the tables into ``docs/performance.md``
(between the ``bench_frontend`` markers of the "Frontend capacity" section).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402
    APIS, ROOT, LoadClient, Result, _f, http_point, pct, ramp_for, stop, wait_ready,
)

PORT = 18011
TEXT = ("Mistral models are a family of open-weight large language models. They come in several "
        "sizes, from small models that run on a laptop to large mixture-of-experts models for the "
        "data centre. Their tokenizers use byte fallback, so any text can be encoded, and the "
        "instruct versions follow a chat template with control tokens for tools and images. ")
RESULTS = ROOT / ".cache" / "bench-frontend.json"
BEGIN, END = "<!-- bench_frontend:begin -->", "<!-- bench_frontend:end -->"


# -- the server process -------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> None:
    """The real app over FakeEngine, run the way ``server/__main__.py`` runs the real server."""
    sys.path.insert(0, str(ROOT))
    import uvicorn

    from server.app import create_app
    from server.engine.fake import FakeEngine
    from server.logs import setup_logging
    from server.model import load_model_info
    from server.settings import Settings
    from server.state import ServerState

    settings = Settings(model=str(args.tokenizer_dir), served_model_name="tiny", host="127.0.0.1",
                        port=args.port, max_model_len=4096)
    setup_logging(settings.log_level, settings.log_format)
    model = load_model_info(settings)
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    files = [*args.tokenizer_dir.glob("tokenizer.model.v*"), *args.tokenizer_dir.glob("tekken.json")]
    inner = MistralTokenizer.from_file(str(files[0])).instruct_tokenizer.tokenizer
    tokens = inner.encode(TEXT * 8, bos=False, eos=False)  # ~600 tokens of plain text

    def script(prompt: list[int], sampling: object, index: int) -> list[int]:
        return tokens

    fake = FakeEngine(script, max_model_len=4096, step_delay=args.step_delay)

    async def factory() -> FakeEngine:
        return fake

    state = ServerState(settings=settings, model=model, api_keys=settings.resolved_api_keys())
    app = create_app(state, factory)
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        access_log=False, log_config=None, timeout_graceful_shutdown=5,
        **HTTP_STACKS[os.environ.get("BENCH_HTTP_STACK", "uvloop-httptools")]))
    profile_to = os.environ.get("BENCH_CPROFILE")
    if not profile_to:
        server.run()
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        server.run()
    finally:
        profiler.disable()
        profiler.dump_stats(profile_to)


# uvicorn's event loop and HTTP parser: what ``python -m server`` gets (uvicorn's "auto" picks
# uvloop and httptools when installed, as they are here), or pure-Python asyncio + h11
HTTP_STACKS = {"uvloop-httptools": {"loop": "uvloop", "http": "httptools"},
               "asyncio-h11": {"loop": "asyncio", "http": "h11"}}


def start_server(tokenizer_dir: Path, port: int, log: Path, cprofile: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if cprofile:
        env["BENCH_CPROFILE"] = str(cprofile)
    cmd = [sys.executable, str(Path(__file__).resolve()), "serve", "--port", str(port),
           "--tokenizer-dir", str(tokenizer_dir)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


# -- profiles ---------------------------------------------------------------------------------------
BUCKETS = [  # (bucket, substrings of the file path), first match wins
    ("fake engine", ("server/engine/fake.py",)),
    ("server/sse.py", ("server/sse.py",)),
    ("server/chat/*", ("server/chat/",)),
    ("parsers/*", ("parsers/",)),
    ("server/* (app, routes, protocol, admission, metrics, logs)", ("server/",)),
    ("orjson", ("orjson",)),
    ("starlette / fastapi", ("starlette/", "fastapi/")),
    ("uvicorn / httptools (HTTP protocol)", ("uvicorn/", "httptools")),
    ("asyncio / uvloop (event loop; C work shows here)", ("asyncio/", "uvloop", "<frozen runpy>", "runpy")),
    ("pydantic (request validation)", ("pydantic",)),
    ("mistral_common (rendering)", ("mistral_common",)),
    ("prometheus_client (metrics)", ("prometheus_client",)),
    ("logging", ("logging/",)),
]


def bucket_of(filename: str) -> str:
    for name, keys in BUCKETS:
        if any(k in filename for k in keys):
            return name
    return "other (stdlib, contextvars, …)"


# the process's outermost frames: in every complete stack, so nothing to learn from their inclusive time
ROOTS = {"<module> (bench_frontend.py)", "main (bench_frontend.py)", "serve (bench_frontend.py)",
         "Server.run (uvicorn/server.py)", "asyncio_run (uvicorn/_compat.py)", "Runner.run (asyncio/runners.py)"}
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_frame(frame: str) -> tuple[str, str]:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip(), frame.strip()
    return m["func"], m["file"]


def summarize_raw(path: Path) -> dict:
    """py-spy's raw (collapsed-stack) output → inclusive / self shares per function and bucket."""
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        samples += n
        names = []
        for frame in frames:
            func, file = parse_frame(frame)
            names.append((f"{func} ({_short(file)})", file))
        for name in {name for name, _ in names} - ROOTS:
            total[name] += n
        leaf, leaf_file = names[-1]
        own[leaf] += n
        buckets[bucket_of(leaf_file)] += n
    return _shares(samples, total, own, buckets, "py-spy")


def summarize_cprofile(path: Path) -> dict:
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    for (file, line, func), (_cc, _nc, tottime, cumtime, _callers) in stats.items():
        name = f"{func} ({_short(file)})"
        own[name] += tottime
        total[name] = max(total[name], cumtime)
        buckets[bucket_of(file if file != "~" else func)] += tottime
    samples = sum(own.values())
    return _shares(samples, total, own, buckets, "cProfile")


def _short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _shares(samples: float, total: Counter, own: Counter, buckets: Counter, tool: str) -> dict:
    def top(counter: Counter, n: int) -> list[tuple[str, float]]:
        return [(name, value / samples * 100) for name, value in counter.most_common(n)]
    return {"tool": tool, "samples": samples, "inclusive": top(total, 25), "self": top(own, 25),
            "buckets": top(buckets, len(BUCKETS) + 1)}


def find_py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    if here.exists():
        return str(here)
    found = shutil.which("py-spy")
    if found:
        return found
    print("py-spy not found: installing it into the venv from PyPI", flush=True)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)
    return str(here) if pip.returncode == 0 and here.exists() else None


def profile_py_spy(client: LoadClient, pid: int, seconds: float, concurrency: int,
                   max_tokens: int, previous: Result | None) -> tuple[dict | None, Result | None, str]:
    py_spy = find_py_spy()
    if py_spy is None:
        return None, None, "py-spy could not be installed"
    out = ROOT / ".cache" / "bench-frontend-pyspy.txt"
    out.unlink(missing_ok=True)
    lead = 5.0  # warm-up of the load before sampling starts
    future = client.pool.submit(http_point, f"http://127.0.0.1:{PORT}/v1", "tiny", concurrency,
                                seconds + 2 * lead, max_tokens, None, pid,
                                ramp_for(concurrency, max_tokens, previous, 2))
    time.sleep(lead + 2)
    cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
           "--format", "raw", "--function", "--nonblocking", "-o", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    result = Result(**future.result())
    if run.returncode != 0 or not out.exists() or not out.stat().st_size:
        return None, result, f"py-spy failed ({run.returncode}): {(run.stderr or run.stdout).strip()[-500:]}"
    return summarize_raw(out), result, " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd))


def profile_cprofile(tokenizer_dir: Path, client: LoadClient, seconds: float, concurrency: int,
                     max_tokens: int) -> tuple[dict, Result]:
    out = ROOT / ".cache" / "bench-frontend.cprofile"
    out.unlink(missing_ok=True)
    proc = start_server(tokenizer_dir, PORT, ROOT / ".cache" / "bench-frontend-cprofile.log", out)
    try:
        wait_ready(f"http://127.0.0.1:{PORT}", proc, timeout=120)
        result = client.measure(f"http://127.0.0.1:{PORT}/v1", "tiny", concurrency, seconds,
                                max_tokens, pid=proc.pid)
    finally:
        stop(proc)
    return summarize_cprofile(out), result


def print_profile(profile: dict) -> None:
    print(f"\nprofile ({profile['tool']}, {profile['samples']:.0f} samples of the API process)")
    for title, key in (("self time by bucket", "buckets"), ("top 25 by inclusive time", "inclusive"),
                       ("top 25 by self time", "self")):
        print(f"\n{title}:")
        for name, share in profile[key]:
            print(f"  {share:5.1f} %  {name}")


# -- report -----------------------------------------------------------------------------------------
FE_HEADER = ("| concurrency | output tok/s | streams/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | "
             "ITL p99 ms | API CPU µs/token | API CPU % | client CPU % | other CPU % | errors |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|")


def fe_row(r: Result) -> str:
    ms = 1000
    return (f"| {r.concurrency} | {r.tok_s:.0f} | {r.req_s:.1f} | {_f(pct(r.ttft, 50) * ms, '.1f')} | "
            f"{_f(pct(r.ttft, 99) * ms, '.1f')} | {_f(pct(r.itl, 50) * ms, '.2f')} | "
            f"{_f(pct(r.itl, 99) * ms, '.2f')} | {_f(r.api_us_per_token, '.0f')} | "
            f"{_f(r.share(r.api_cpu), '.0f')} | {_f(r.share(r.client_cpu), '.0f')} | "
            f"{_f(r.share(r.other_cpu), '.0f')} | {r.errors} |")


def block(results: list[Result], profile: dict | None, profiled: Result | None, how: str,
          args: argparse.Namespace, date: str | None = None) -> str:
    valid = [r for r in results if r.api_us_per_token == r.api_us_per_token]
    best = min(valid, key=lambda r: r.api_us_per_token)
    worst = max(valid, key=lambda r: r.api_us_per_token)
    fake = dict(profile["buckets"]).get("fake engine", 0.0) if profile else 0.0
    lines = [
        f"`{how}` on {date or time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores; {args.duration:g} s measured "
        f"per point after the warm-up; {args.max_tokens}-token streams with usage):",
        "",
        FE_HEADER,
        *(fe_row(r) for r in results),
        "",
        "One API process is one event loop on one core: it sustains 1e6 / (µs per token) output "
        f"tokens/s, **{1e6 / worst.api_us_per_token:,.0f}–{1e6 / best.api_us_per_token:,.0f} tok/s** here "
        f"({worst.api_us_per_token:.0f} µs per token at concurrency {worst.concurrency}, "
        f"{best.api_us_per_token:.0f} µs at {best.concurrency}), and it ran at "
        f"{_span([r.share(r.api_cpu) for r in valid])} % of its core "
        "at every point, so that is also what it delivered (the load generator, on the other core, "
        "kept up)."
        + (f" About {fake:.0f} % of those samples are the fake engine itself (below), so the frontend "
           f"proper costs ~{(1 - fake / 100) * best.api_us_per_token:.0f}–{(1 - fake / 100) * worst.api_us_per_token:.0f} µs "
           "per token." if fake else ""),
    ]
    if profile is not None:
        where = f", while it served {profiled.tok_s:,.0f} tok/s" if profiled else ""
        lines += [
            "",
            f"Profile: {profile['tool']} on the API process at concurrency {args.profile_concurrency}, "
            f"{args.profile_seconds:g} s ({profile['samples']:.0f} samples{where}); "
            "self time by where the sampled frame's code lives (C code — orjson, httptools, uvloop's "
            "socket writes — counts towards the Python function that called it). Self shares are "
            "reliable; inclusive shares understate outer frames, because py-spy's stacks through "
            "coroutines and async generators resumed by the event loop are often cut short:",
            "",
            "| bucket (self time) | share of samples |",
            "|---|---|",
            *(f"| {name} | {share:.1f} % |" for name, share in profile["buckets"]),
            "",
            "<details><summary>Top 25 functions by inclusive and by self time</summary>",
            "",
            "| inclusive | function | | self | function |",
            "|---|---|---|---|---|",
            *(f"| {a[1]:.1f} % | `{a[0]}` | | {b[1]:.1f} % | `{b[0]}` |"
              for a, b in zip(profile["inclusive"], profile["self"])),
            "",
            "</details>",
        ]
    return "\n".join(lines)


def _span(values: list[float]) -> str:
    low, high = f"{min(values):.0f}", f"{max(values):.0f}"
    return low if low == high else f"{low}–{high}"


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "performance.md"
    doc = path.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1]
    else:
        doc = (doc.rstrip("\n") + "\n\n## Frontend capacity (engine at no cost)\n\n"
               f"{BEGIN}\n{text}\n{END}\n")
    path.write_text(doc)
    print(f"wrote {path}")


# -- main -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help="(internal) the server process")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--tokenizer-dir", type=Path, required=True)
    srv.add_argument("--step-delay", type=float, default=0.0, help="seconds per fake engine step")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per point")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--api", choices=APIS, default="chat",
                        help="the load: chat completions, /v1/messages or text completions")
    parser.add_argument("--http-stack", choices=sorted(HTTP_STACKS), default="uvloop-httptools",
                        help="uvicorn's loop and HTTP parser for the server process")
    parser.add_argument("--profile", action="store_true", help="py-spy (or cProfile) at one concurrency")
    parser.add_argument("--profile-concurrency", type=int, default=64)
    parser.add_argument("--profile-seconds", type=float, default=15)
    parser.add_argument("--cprofile", action="store_true", help="profile with cProfile, not py-spy")
    parser.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
    parser.add_argument("--report-only", action="store_true",
                        help=f"rebuild the tables from {RESULTS.relative_to(ROOT)} (with --write-docs: the docs)")
    args = parser.parse_args()
    if args.command != "serve":  # the server process reads it from its environment
        os.environ["BENCH_HTTP_STACK"] = args.http_stack
    if args.command == "serve":
        serve(args)
        return
    if args.report_only:
        saved = json.loads(RESULTS.read_text())
        for key, value in saved.get("args", {}).items():
            setattr(args, key, value)
        profiled = Result(**saved["profiled"]) if saved.get("profiled") else None
        text = block([Result(**r) for r in saved["results"]], saved.get("profile"), profiled,
                     saved.get("how", ".venv/bin/python scripts/bench_frontend.py --duration 15 --profile"),
                     args, saved.get("date"))
        print(text)
        if args.write_docs:
            write_docs(text)
        return

    sys.path.insert(0, str(ROOT))
    from server.tinymodel import write_tokenizer

    tokenizer_dir = ROOT / ".cache" / "bench-frontend-v3-spm"
    if not any(tokenizer_dir.glob("tokenizer.model.v*")):
        write_tokenizer("v3-spm", tokenizer_dir)
    base = f"http://127.0.0.1:{PORT}/v1"
    results: list[Result] = []
    profile, profiled, how_profiled = None, None, ""
    print(FE_HEADER, flush=True)
    with LoadClient() as client:
        proc = start_server(tokenizer_dir, PORT, ROOT / ".cache" / "bench-frontend-server.log")
        try:
            wait_ready(f"http://127.0.0.1:{PORT}", proc, timeout=120)
            client.measure(base, "tiny", 4, 3, args.max_tokens, api=args.api)  # warm-up
            for c in args.concurrency:
                previous = results[-1] if results else None
                results.append(client.measure(base, "tiny", c, args.duration, args.max_tokens,
                                              pid=proc.pid, ramp=ramp_for(c, args.max_tokens, previous, 2),
                                              api=args.api))
                print(fe_row(results[-1]), flush=True)
            if args.profile and not args.cprofile:
                near = min(results, key=lambda r: abs(r.concurrency - args.profile_concurrency))
                profile, profiled, how_profiled = profile_py_spy(
                    client, proc.pid, args.profile_seconds, args.profile_concurrency, args.max_tokens, near)
                if profile is None:
                    print(f"\n{how_profiled}; falling back to cProfile", file=sys.stderr)
        finally:
            stop(proc)
        if args.profile and profile is None:
            profile, profiled = profile_cprofile(tokenizer_dir, client, args.profile_seconds,
                                                 args.profile_concurrency, args.max_tokens)
            how_profiled = "cProfile in the server process (BENCH_CPROFILE)"
    if profiled is not None:
        print(f"\nduring the profile: {fe_row(profiled)}")
    if profile is not None:
        print(f"profiled with: {how_profiled}")
        print_profile(profile)
    argv = " ".join(a for a in sys.argv[1:] if a != "--write-docs")
    how = f".venv/bin/python scripts/bench_frontend.py {argv}".strip()
    kept = {k: getattr(args, k) for k in ("duration", "max_tokens", "profile_concurrency", "profile_seconds")}
    RESULTS.write_text(json.dumps({"results": [asdict(r) for r in results], "profile": profile,
                                   "profiled": asdict(profiled) if profiled else None,
                                   "how": how, "args": kept, "date": time.strftime("%Y-%m-%d")}))
    text = block(results, profile, profiled, how, args)
    print("\n" + text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
