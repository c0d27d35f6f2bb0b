"""Cost of decoding one hostile image: peak resident memory and CPU time, one image per child process.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_image_decode.py            # every case
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_image_decode.py png-rgb-40mp jpeg-40mp
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_image_decode.py --no-budget  # decode them all
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_image_decode.py --parity  # vs mistral-common

Each case is a small file whose header declares a big image (just under the default
`image_max_pixels`, 40 M): flat PNGs (RGB, RGBA, palette, 16-bit), a GIF, a lossless WebP, and
baseline and progressive JPEGs. A fresh child process builds the bytes, resets its peak-RSS mark
(`/proc/self/clear_refs`), then calls `server.chat.images.decode` once, as the server's decode
threads do, for the largest model grid (Mistral Small: 1540 px, 14 px patches, 2x2 merge). It
reports the peak RSS above the level before the call (VmHWM - VmRSS), the CPU time of the whole
process during the call (all threads: OpenCV's resize is multi-threaded) and the wall time. An
image refused by a budget (the defaults: `image_decode_max_pixels` 25 M, at most 32 JPEG scans)
reports its error code instead of a size; `--no-budget` lifts the decode budget to measure
what decoding such an image costs. Two more cases: a progressive JPEG with 100 extra scans, and
a 16x16 PNG padded with 10 MB of empty chunks.
"""

from __future__ import annotations

import inspect
import io
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
W, H = 8000, 4999  # 39,992,000 pixels: under the default image_max_pixels (40 M)


def _png(mode: str, bits: int = 8, size: tuple[int, int] = (W, H)) -> bytes:
    """A flat (all-zero) PNG written by hand: a few KB however large it declares."""
    import struct

    W, H = size  # noqa: N806
    colour = {"RGB": 2, "RGBA": 6, "P": 3, "L": 0}[mode]
    channels = {"RGB": 3, "RGBA": 4, "P": 1, "L": 1}[mode]
    row = b"\0" + b"\0" * (W * channels * bits // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(H)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    extra = chunk(b"PLTE", b"\0\0\0" * 2) if mode == "P" else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, bits, colour, 0, 0, 0))
            + extra + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _pillow(fmt: str, size: tuple[int, int] = (W, H), **kwargs: object) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(out, fmt, **kwargs)
    return out.getvalue()


def _scan_bomb(extra: int) -> bytes:
    """A progressive JPEG whose last scan (65 bytes: an AC refinement) is repeated ``extra``
    times: libjpeg runs each one over every coefficient of the image."""
    data = _pillow("JPEG", quality=50, progressive=True)
    last = data.rindex(b"\xff\xda")
    scan = data[last:-2]  # up to EOI
    return data[:-2] + scan * extra + b"\xff\xd9"


def _png_chunk_spam() -> bytes:
    """A 16x16 PNG with ~10 MB of empty ancillary chunks: Pillow reads each one in Python."""
    import struct

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "PNG")
    png = out.getvalue()
    empty = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
    return png[:33] + empty * 800_000 + png[33:]


CASES = {
    "png-rgb-40mp": lambda: _png("RGB"),
    "png-rgba-40mp": lambda: _png("RGBA"),
    "png-palette-40mp": lambda: _png("P"),
    "png-rgb16-40mp": lambda: _png("RGB", 16),
    "gif-40mp": lambda: _pillow("GIF"),
    "webp-lossless-40mp": lambda: _pillow("WEBP", lossless=True, quality=0, method=0),
    "jpeg-40mp": lambda: _pillow("JPEG", quality=50),
    "jpeg-progressive-40mp": lambda: _pillow("JPEG", quality=50, progressive=True),
    "jpeg-scan-bomb-40mp": lambda: _scan_bomb(100),
    # the largest each format may be under the default decode budget (25 M)
    "png-rgba-25mp": lambda: _png("RGBA", size=(6250, 4000)),
    "webp-lossless-8.3mp": lambda: _pillow("WEBP", (3840, 2160), lossless=True, quality=0, method=0),
    "jpeg-progressive-12.5mp": lambda: _pillow("JPEG", (4330, 2886), quality=50, progressive=True),
    "jpeg-25mp": lambda: _pillow("JPEG", (6250, 4000), quality=50),
    "png-chunk-spam-10mb": _png_chunk_spam,
}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def child(name: str, budget: bool) -> dict:
    """Runs in the child: decode one image, measure."""
    import resource  # noqa: F401 - imported before the baseline

    import cv2  # noqa: F401 - loaded before the baseline, as in the server
    import numpy as np  # noqa: F401
    from mistral_common.tokens.tokenizers.image import ImageConfig

    from server.chat import images

    data = CASES[name]()
    config = ImageConfig(image_patch_size=14, max_image_size=1540, spatial_merge_size=2)
    params = inspect.signature(images.decode).parameters
    kwargs = {}
    if "decode_max_pixels" in params and not budget:  # the decode budget (if any) off
        kwargs["decode_max_pixels"] = 10**12
    images.decode(_tiny(), config, 40_000_000, **kwargs)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    cpu, wall = time.process_time(), time.perf_counter()
    result: dict = {"case": name, "file_kb": round(len(data) / 1024, 1)}
    try:
        image = images.decode(data, config, 40_000_000, **kwargs)
        result["size"] = f"{image.width}x{image.height}"
    except images.ImageProblem as exc:
        result["refused"] = exc.code
    result["cpu_s"] = round(time.process_time() - cpu, 3)
    result["wall_s"] = round(time.perf_counter() - wall, 3)
    result["peak_mb"] = round((_status("VmHWM") - before) / 2**20, 1)
    return result


def _tiny() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "PNG")
    return out.getvalue()


def _natural(width: int, height: int, seed: int) -> "np.ndarray":
    """Photo-like test pixels: noise with a 1/f amplitude spectrum (as natural images have)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1 / np.maximum(np.hypot(fx, fy), 1 / max(width, height))
    channels = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
        plane = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(height, width))
        plane = (plane - plane.mean()) / plane.std()
        channels.append(np.clip(128 + 48 * plane, 0, 255))
    return np.stack(channels, axis=-1).astype(np.uint8)


def parity() -> None:
    """How far the server's pixels are from mistral-common's (its encoder on the original
    image), in the units of the parity tests (normalized pixel values) and in 8-bit levels."""
    import cv2
    import numpy as np
    from mistral_common.protocol.instruct.chunk import ImageChunk
    from mistral_common.tokens.tokenizers.image import ImageConfig, ImageEncoder, SpecialImageIDs
    from PIL import Image

    from server.chat.images import decode, model_size

    config = ImageConfig(image_patch_size=14, max_image_size=1540, spatial_merge_size=2)
    encoder = ImageEncoder(config, SpecialImageIDs(10, 12, 13))
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)[:, None, None]

    def compare(name: str, original: Image.Image, ours: Image.Image) -> None:
        reference = encoder(ImageChunk(image=original)).image
        diff = np.abs(reference - encoder(ImageChunk(image=ours)).image)
        levels = diff * std * 255
        print(f"{name:46} mean {diff.mean():.4f} p95 {np.percentile(diff, 95):.4f} "
              f"| 8-bit levels: mean {levels.mean():.2f} p99 {np.percentile(levels, 99):.1f}")

    def reduced_first(image: Image.Image, size: tuple[int, int]) -> Image.Image:
        """The alternative not taken: Pillow's box reduce to within 2x, then the cubic."""
        factor = (max(1, image.width // size[0]), max(1, image.height // size[1]))
        small = np.asarray(image.reduce(factor), dtype=np.float32)
        out = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))

    print("parity with mistral-common (the parity tests allow mean 0.01, p95 0.02):")
    for kind, pixels in (("photo-like", _natural(4000, 3000, 0)),
                         ("noise", np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8))):
        original = Image.fromarray(pixels)
        size = model_size(4000, 3000, config)
        png = io.BytesIO()
        original.save(png, "PNG", compress_level=1)
        compare(f"{kind} 4000x3000 PNG, served", original, decode(png.getvalue(), config, 10**8, 10**8))
        compare(f"{kind} 4000x3000, box reduce then cubic", original, reduced_first(original, size))
        jpeg = io.BytesIO()
        original.save(jpeg, "JPEG", quality=95)
        decoded = Image.open(io.BytesIO(jpeg.getvalue())).convert("RGB")  # what mistral-common sees
        compare(f"{kind} 4000x3000 JPEG q95, served (whole)", decoded,
                decode(jpeg.getvalue(), config, 10**8, 10**8))
        compare(f"{kind} JPEG over the decode budget (1/2 scale)", decoded,
                decode(jpeg.getvalue(), config, 10**8, 4000 * 3000 - 1))


def main() -> None:
    if sys.argv[1:] == ["--parity"]:
        parity()
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3] == "budget")))
        return
    args = [a for a in sys.argv[1:] if a != "--no-budget"]
    budget = "no-budget" if "--no-budget" in sys.argv else "budget"
    names = args or list(CASES)
    print(f"{'case':24} {'file KB':>8} {'result':>12} {'peak MB':>8} {'CPU s':>6} {'wall s':>6}")
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--child", name, budget], capture_output=True,
                             text=True, cwd=ROOT, check=False)
        if out.returncode:
            print(name, "failed:", out.stderr[-2000:])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['case']:24} {r['file_kb']:>8} {r.get('size', r.get('refused')):>12} "
              f"{r['peak_mb']:>8} {r['cpu_s']:>6} {r['wall_s']:>6}")


if __name__ == "__main__":
    main()
