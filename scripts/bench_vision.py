"""Image requests on our server vs vLLM's own OpenAI server: same tiny random Pixtral-format model,
same engine settings, one server at a time (two engines on 2 cores starve each other).

    .venv/bin/python scripts/bench_vision.py --quick          # smoke run, prints the report only
    .venv/bin/python scripts/bench_vision.py --out docs/vision-benchmark.md   # + .png next to it

Per server, after a warm-up: (1) TTFT of N sequential streaming requests (max_tokens 16,
temperature 0) with 0, 1 (distinct, and the same one repeated) and 4 images (640x480 noise PNGs
as base64 data URLs, a different seeded image per request); (2) K closed-loop text streams
(max_tokens 64, ignore_eos) for D seconds, alone and while a separate loop sends 4-image
requests (1024x1024 noise PNGs) one at a time; (3) the API process's own CPU time
(/proc/<pid>/stat utime+stime, not its engine-core child) per request in (1) and per second in (2).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import PROMPT, ROOT, pct, stop, tree_rss_mb  # noqa: E402

CACHE = ROOT / ".cache"
MODEL = "tiny-vision"
SERVERS = ("ours", "vLLM")
KINDS = {"text": 0, "1 image": 1, "1 image (same, repeated)": 1, "4 images": 4}


# -- images and request bodies ------------------------------------------------------------------
def noise_png(seed: int, width: int, height: int, levels: int = 128) -> bytes:
    """A random-noise PNG as a data URL (bytes). 7-bit noise by default: four 1024x1024 full
    8-bit noise PNGs are 16.0 MiB of base64, just over our server's 16 MiB default body cap."""
    rng = np.random.default_rng(seed)
    pixels = (rng.integers(0, levels, (height, width, 3), dtype=np.uint8) * (256 // levels))
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, "PNG", compress_level=1)
    return b"data:image/png;base64," + base64.b64encode(buf.getvalue())


def body(images: list[bytes], max_tokens: int) -> bytes:
    """The request JSON; data URLs are plain base64, spliced in without re-encoding them."""
    if images:
        parts = [b'{"type":"text","text":"Describe the images."}'] + [
            b'{"type":"image_url","image_url":{"url":"' + url + b'"}}' for url in images]
        content = b"[" + b",".join(parts) + b"]"
    else:
        content = json.dumps(PROMPT).encode()
    rest = json.dumps({"model": MODEL, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                       "stream": True, "stream_options": {"include_usage": True}})
    return b'{"messages":[{"role":"user","content":' + content + b"}]," + rest[1:].encode()


@dataclass
class Images:
    small: list[bytes]  # 640x480, phase 1 (distinct per request, then warm-up ones)
    large: list[bytes]  # 1024x1024, phase 2 load loop
    probe: list[bytes]  # 4 full 8-bit noise 1024x1024: does the server take them?

    @classmethod
    def make(cls, n_small: int, n_large: int, size: tuple[int, int]) -> "Images":
        return cls([noise_png(i, 640, 480) for i in range(n_small)],
                   [noise_png(10_000 + i, *size) for i in range(n_large)],
                   [noise_png(20_000 + i, 1024, 1024, levels=256) for i in range(4)])


# -- one streaming request ----------------------------------------------------------------------
@dataclass
class Stats:
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    wrapped: bool = False  # the load loop ran out of distinct images and repeated some

    @property
    def requests(self) -> int:
        return len(self.latency)


OUTPUT_KEYS = ("content", "reasoning", "reasoning_content", "tool_calls")


async def request(client: httpx.AsyncClient, payload: bytes, stats: Stats) -> None:
    """POST one streaming chat completion; record TTFT (first chunk with output), the gaps
    between output chunks (ITL), the end-to-end latency and the usage's completion tokens."""
    start = time.perf_counter()
    last: float | None = None
    try:
        async with client.stream("POST", "/v1/chat/completions", content=payload,
                                 headers={"Content-Type": "application/json"}) as r:
            if r.status_code != 200:
                stats.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                return
            buffer = b""
            async for data in r.aiter_bytes():
                buffer += data.replace(b"\r", b"")
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    if not frame.startswith(b"data: ") or frame == b"data: [DONE]":
                        continue
                    chunk = json.loads(frame[6:])
                    if chunk.get("usage") and not chunk.get("choices"):
                        stats.tokens += chunk["usage"]["completion_tokens"]
                    elif chunk.get("choices"):
                        delta = chunk["choices"][0].get("delta") or {}
                        if any(delta.get(k) for k in OUTPUT_KEYS):
                            now = time.perf_counter()
                            (stats.ttft.append(now - start) if last is None
                             else stats.itl.append(now - last))
                            last = now
        stats.latency.append(time.perf_counter() - start)
    except httpx.HTTPError as exc:
        stats.errors.append(repr(exc))


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # comm may hold spaces; fields[0] is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def others_cpu(pid: int) -> tuple[float, float]:
    """(now, CPU-seconds used machine-wide by processes other than the server tree and this
    client): tells whether something else ran during a measurement."""
    import psutil

    with open("/proc/stat") as f:
        jiffies = [int(x) for x in f.readline().split()[1:9]]
    busy = (sum(jiffies) - jiffies[3] - jiffies[4]) / os.sysconf("SC_CLK_TCK")
    server = psutil.Process(pid)
    tree = sum(sum(p.cpu_times()[:2]) for p in [server, *server.children(recursive=True)])
    return time.monotonic(), busy - tree - sum(os.times()[:2])


# -- measurements --------------------------------------------------------------------------------
async def measure(base: str, pid: int, imgs: Images, args: argparse.Namespace) -> dict:
    n, out = args.requests, {}
    limits = httpx.Limits(max_connections=args.streams + 4, max_keepalive_connections=args.streams + 4)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        # warm-up: a few of each kind (images not used later), one load request, a text burst
        warm = imgs.small[5 * n + 1:]
        for i in range(3):
            for payload in (body([], 16), body(warm[i:i + 1], 16), body(warm[3 + 4 * i:7 + 4 * i], 16)):
                await request(client, payload, Stats())
        await request(client, body(imgs.large[-4:], 8), Stats())
        probe = Stats()
        await request(client, body(imgs.probe, 8), probe)
        out["probe"] = probe.errors[0] if probe.errors else "accepted"
        await phase2(client, pid, [], 3, args)

        start = others_cpu(pid)
        # 1. TTFT, sequential, the kinds interleaved so drift and background work hit all alike;
        # a different image per request except in the "same" row (an image used nowhere else)
        out |= {kind: Stats() for kind in KINDS}
        idle0 = cpu_seconds(pid)
        await asyncio.sleep(3)
        out["idle_cores"] = (cpu_seconds(pid) - idle0) / 3
        for i in range(n):
            for kind, count in KINDS.items():
                images = (imgs.small[5 * n:5 * n + 1] if "same" in kind else
                          imgs.small[i:i + count] if count < 4 else imgs.small[n + 4 * i:n + 4 * i + 4])
                cpu0 = cpu_seconds(pid)
                await request(client, body(images, 16), out[kind])
                out[kind].cpu_s += cpu_seconds(pid) - cpu0
        for kind in KINDS:
            st = out[kind]
            print(f"  {kind:26s} TTFT p50 {pct(st.ttft, 50) * 1e3:7.1f} ms  p90 "
                  f"{pct(st.ttft, 90) * 1e3:7.1f} ms  CPU/req {st.cpu_s / n * 1e3:6.1f} ms  "
                  f"errors {len(st.errors)}", flush=True)

        # 2. concurrent text streams, alone and under a 4-image request loop
        for label, load in (("alone", []), ("with image load", imgs.large)):
            text, image = await phase2(client, pid, load[:-4], args.duration, args)
            out[label] = (text, image)
            print(f"  text {label:16s} ITL p50 {pct(text.itl, 50) * 1e3:6.1f} p99 "
                  f"{pct(text.itl, 99) * 1e3:6.1f} max {max(text.itl, default=0) * 1e3:6.0f} ms  "
                  f"{text.tokens / text.wall_s:6.0f} tok/s  image requests {image.requests} "
                  f"errors {len(text.errors) + len(image.errors)}", flush=True)
    end = others_cpu(pid)
    out["others_cores"] = (end[1] - start[1]) / (end[0] - start[0])
    print(f"  other processes used {out['others_cores']:.2f} cores meanwhile", flush=True)
    out["rss_mb"] = tree_rss_mb(pid)
    return out


async def phase2(client: httpx.AsyncClient, pid: int, load: list[bytes], duration: float,
                 args: argparse.Namespace) -> tuple[Stats, Stats]:
    text, image = Stats(), Stats()
    payload = body([], 64)
    deadline = time.perf_counter() + duration
    ends: list[float] = []

    async def stream() -> None:
        while time.perf_counter() < deadline:
            await request(client, payload, text)
        ends.append(time.perf_counter())

    async def images() -> None:
        i = 0
        while load and time.perf_counter() < deadline:
            batch = [load[(i + j) % len(load)] for j in range(4)]  # wraps only if the pool is short
            await request(client, body(batch, 8), image)
            i += 4
        image.wrapped = i > len(load)

    cpu0, start = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(images(), *(stream() for _ in range(args.streams)))
    text.wall_s = max(ends) - start  # not waiting for the last image request
    text.cpu_s = cpu_seconds(pid) - cpu0
    return text, image


# -- servers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind: str, model_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "MSERVE_CACHE_DIR": str(CACHE)}
    common = ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", MODEL]
    if kind == "ours":  # embedded model defaults: float32, enforce_eager, max_model_len 4096
        cmd = ["-m", "server", *common, "--tiny-tokenizer", "v11-tekken", "--tiny-vision",
               "--image-limit", "4"]
    else:
        cmd = ["-m", "vllm.entrypoints.openai.api_server", *common, "--model", str(model_dir),
               "--tokenizer-mode", "mistral", "--config-format", "mistral", "--load-format",
               "mistral", "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096",
               "--limit-mm-per-prompt", '{"image": 4}', "--no-enable-log-requests",
               "--disable-uvicorn-access-log"]  # ours logs no access lines either
    return subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(base: str, kind: str, proc: subprocess.Popen, timeout: float = 600) -> float:
    paths = ["/ready"] if kind == "ours" else ["/health", "/v1/models"]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}")
        try:
            if all(httpx.get(base + p, timeout=5).status_code == 200 for p in paths):
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{kind} server not ready after {timeout:.0f} s")


def shutdown(proc: subprocess.Popen) -> None:
    """bench.stop (SIGINT to the group, SIGKILL after 60 s), then make sure the whole group
    (API process and engine core) is gone."""
    try:
        stop(proc)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for attempt in range(60):
        try:
            os.killpg(proc.pid, 0 if attempt < 30 else signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.5)


# -- report --------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else "-"


def report(res: dict[str, dict], args: argparse.Namespace, png: Path | None) -> str:
    import vllm

    o, v, n = res["ours"], res["vLLM"], args.requests
    lines = [
        "# Vision benchmark: image requests, ours vs vLLM's OpenAI server", "",
        f"Generated by `.venv/bin/python scripts/bench_vision.py {' '.join(sys.argv[1:])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}.", "",
        f"- Machine: {os.cpu_count()} CPU cores, {platform.machine()}, Python "
        f"{platform.python_version()}, vLLM {vllm.__version__} (CPU build), no GPU; load average "
        f"at start {args.load:.2f}; CPU used by other processes during the measurements (not "
        f"the server, not this client): {o['others_cores']:.2f} cores in ours' run, "
        f"{v['others_cores']:.2f} in vLLM's.{(' ' + args.note) if args.note else ''}",
        "- Model: the tiny random Pixtral-format model (`build_tiny_model(..., 'v11-tekken', "
        "vision=True)`: hidden 256, 2 layers, Tekken v11 tokenizer, 8-px patches, 2×2 merge, "
        "max 64 px, so an image becomes at most a 4×4 token grid).",
        "- Engine, both servers: float32, `enforce_eager`, `max_model_len` 4096, "
        "`limit_mm_per_prompt {\"image\": 4}`, `VLLM_CPU_KVCACHE_SPACE=2`; one server at a time, "
        "client (asyncio + httpx) on the same machine. vLLM's server runs without request or "
        "access logging (ours logs neither).",
        f"- Images: seeded random 7-bit noise PNGs sent as base64 data URLs, a different one per "
        f"request unless noted; 640×480 in (1), {args.load_size[0]}×{args.load_size[1]} in (2).",
        f"- Server start to ready: ours {o['ready_s']:.0f} s, vLLM {v['ready_s']:.0f} s; process "
        f"tree RSS after the run: ours {o['rss_mb']:.0f} MB, vLLM {v['rss_mb']:.0f} MB.",
        f"- Body-size probe (four 1024×1024 full 8-bit noise PNGs, 16.0 MiB of base64): ours "
        f"{o['probe']}; vLLM {v['probe']}.", "",
    ]
    if png:
        lines += [f"![TTFT and text ITL]({png.name})", ""]
    lines += ["## 1. Time to first token, sequential requests", "",
              f"{n} streaming requests per row, `max_tokens` 16, temperature 0.", "",
              "| request | ours p50 ms | ours p90 ms | vLLM p50 ms | vLLM p90 ms | ours/vLLM p50 | errors (ours/vLLM) |",
              "|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        a, b = o[kind], v[kind]
        q = [pct(x.ttft, p) * 1e3 for x in (a, b) for p in (50, 90)]
        lines.append(f"| {kind} | {q[0]:.1f} | {q[1]:.1f} | {q[2]:.1f} | {q[3]:.1f} | {ratio(q[0], q[2])} | "
                     f"{len(a.errors)}/{len(b.errors)} |")
    lines += ["", "## 2. Concurrent text streams while image requests arrive", "",
              f"{args.streams} closed-loop text streams (`max_tokens` 64, `ignore_eos`) for "
              f"{args.duration:.0f} s, alone and while one loop sends 4-image requests "
              f"({args.load_size[0]}×{args.load_size[1]}, `max_tokens` 8) back to back. ITL is the gap "
              "between two output chunks of one stream; max ITL the longest such gap of any stream.", "",
              "| metric | ours alone | ours + images | vLLM alone | vLLM + images | ours/vLLM alone "
              "| ours/vLLM + images |", "|---|---|---|---|---|---|---|"]
    cols = [o["alone"], o["with image load"], v["alone"], v["with image load"]]
    metrics = [("text ITL p50 ms", lambda t, i: pct(t.itl, 50) * 1e3),
               ("text ITL p99 ms", lambda t, i: pct(t.itl, 99) * 1e3),
               ("text max ITL ms", lambda t, i: max(t.itl, default=0) * 1e3),
               ("text TTFT p50 ms", lambda t, i: pct(t.ttft, 50) * 1e3),
               ("text output tok/s", lambda t, i: t.tokens / t.wall_s),
               ("image requests done", lambda t, i: i.requests),
               ("image request latency p50 ms", lambda t, i: pct(i.latency, 50) * 1e3),
               ("API process CPU, cores", lambda t, i: t.cpu_s / t.wall_s),
               ("errors", lambda t, i: len(t.errors) + len(i.errors))]
    for name, f in metrics:
        vals = [f(t, i) for t, i in cols]
        cells = " | ".join("-" if x != x else f"{x:.0f}" if x >= 100 or float(x).is_integer()
                           else f"{x:.2f}" for x in vals)
        lines.append(f"| {name} | {cells} | {ratio(vals[0], vals[2])} | {ratio(vals[1], vals[3])} |")
    if any(i.wrapped for _, i in cols):
        lines.append("\n(the image pool was too small: some load requests repeated images)")
    lines += ["", "## 3. API-process CPU per request (phase 1)", "",
              "utime + stime of the process launched (the engine core is its child and not counted), "
              f"averaged over the {n} requests of each row. Idle, between requests: ours "
              f"{o['idle_cores'] * 1e3:.0f} ms/s, vLLM {v['idle_cores'] * 1e3:.0f} ms/s.", "",
              "| request | ours CPU ms/request | vLLM CPU ms/request | ours/vLLM |", "|---|---|---|---|"]
    for kind in KINDS:
        a, b = o[kind].cpu_s / n, v[kind].cpu_s / n
        lines.append(f"| {kind} | {a * 1e3:.1f} | {b * 1e3:.1f} | {ratio(a, b)} |")
    errors = {f"{s} {k}": e for s in SERVERS for k, st in res[s].items() if isinstance(st, Stats)
              for e in st.errors[:1]}
    errors |= {f"{s} {k}": st[j].errors[0] for s in SERVERS for k, st in res[s].items()
               if isinstance(st, tuple) for j in (0, 1) if st[j].errors}
    if errors:
        lines += ["", "First error of each row:", ""] + [f"- {k}: `{e}`" for k, e in errors.items()]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, dict], path: Path, streams: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.38
    for s, (server, color) in enumerate(zip(SERVERS, ("tab:blue", "tab:orange"))):
        p50 = [pct(res[server][k].ttft, 50) * 1e3 for k in KINDS]
        p90 = [pct(res[server][k].ttft, 90) * 1e3 for k in KINDS]
        xs = [i + (s - 0.5) * width for i in range(len(KINDS))]
        ax1.bar(xs, p50, width, color=color, label=f"{server} p50")
        ax1.errorbar(xs, p50, yerr=[[0] * len(xs), [b - a for a, b in zip(p50, p90)]], fmt="none",
                     ecolor="black", capsize=4, label="p90" if s else None)
        itl = [pct(res[server][c][0].itl, 99) * 1e3 for c in ("alone", "with image load")]
        bars = ax2.bar([i + (s - 0.5) * width for i in range(2)], itl, width, color=color, label=server)
        ax2.bar_label(bars, fmt="%.0f")
    ax1.set_xticks(range(len(KINDS)), [k.replace(" (same", "\n(same") for k in KINDS])
    ax1.set(ylabel="TTFT (ms)", title="Time to first token, sequential (lower is better)")
    ax2.set_xticks(range(2), ["text streams alone", "+ 4-image request loop"])
    ax2.set(ylabel="text ITL p99 (ms)", title=f"Inter-token latency p99 of {streams} text streams")
    for ax in (ax1, ax2):
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=20, help="sequential requests per TTFT row")
    parser.add_argument("--streams", type=int, default=8, help="concurrent text streams")
    parser.add_argument("--duration", type=float, default=20, help="seconds per concurrent phase")
    parser.add_argument("--load-size", type=int, nargs=2, default=[1024, 1024], metavar=("W", "H"))
    parser.add_argument("--load-images", type=int, default=240, help="distinct images for (2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 requests, 5 s phases")
    parser.add_argument("--out", type=Path, help="markdown report (plot: same name, .png)")
    parser.add_argument("--note", default="", help="added to the report header")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.duration, args.load_images = 4, 5, 48
    args.load = os.getloadavg()[0]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks

    sys.path.insert(0, str(ROOT))
    from server.tinymodel import FORMAT, build_tiny_model

    model_dir = build_tiny_model(CACHE / f"tiny-v11-tekken-vision-f{FORMAT}", "v11-tekken", vision=True)
    print("making images", flush=True)  # before any server starts, not to slow its start
    imgs = Images.make(5 * args.requests + 16, args.load_images + 4, tuple(args.load_size))
    results: dict[str, dict] = {}
    for kind in SERVERS:
        port = free_port()
        log = CACHE / f"bench-vision-{kind}.log"
        print(f"{kind}: starting on port {port} (log {log})", flush=True)
        proc = launch(kind, model_dir, port, log)
        try:
            ready = wait_ready(f"http://127.0.0.1:{port}", kind, proc)
            results[kind] = asyncio.run(measure(f"http://127.0.0.1:{port}", proc.pid, imgs, args))
            results[kind]["ready_s"] = ready
        finally:
            shutdown(proc)
        print(f"{kind}: stopped", flush=True)
    png = args.out.with_suffix(".png") if args.out else None
    if png:
        plot(results, png, args.streams)
    text = report(results, args, png)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out} and {png}")
    else:
        print(text)


if __name__ == "__main__":
    main()
