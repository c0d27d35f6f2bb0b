"""Image helpers without a server: the grid rule, decoding checks, the torchvision stand-in."""

from __future__ import annotations

import io
import subprocess
import sys
import threading

import numpy as np
import pytest
from mistral_common.protocol.instruct.chunk import ImageChunk
from mistral_common.tokens.tokenizers.image import ImageConfig, ImageEncoder, SpecialImageIDs
from PIL import Image

from server.chat import images
from server.chat.images import GridOnlyImageEncoder, decode, grid_tokens, model_size

CONFIGS = [ImageConfig(8, 64, 2), ImageConfig(14, 1540, 2), ImageConfig(16, 1024, 1)]
SIZES = [(1, 1), (15, 16), (16, 16), (17, 17), (50, 70), (64, 20), (1000, 3), (3, 5000),
         (1540, 1540), (4000, 3000), (1541, 200)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"p{c.image_patch_size}-max{c.max_image_size}")
def test_grid_only_encoder_gives_mistral_commons_tokens(config):
    ids = SpecialImageIDs(img=10, img_break=12, img_end=13)
    full, grid = ImageEncoder(config, ids), GridOnlyImageEncoder(ImageEncoder(config, ids))
    for w, h in SIZES:
        chunk = ImageChunk(image=Image.new("RGB", (w, h)))
        assert grid(chunk).tokens == full(chunk).tokens, (w, h)
        # the server resizes to the grid first; mistral-common then keeps that grid
        resized = ImageChunk(image=Image.new("RGB", model_size(w, h, config)))
        assert full(resized).tokens == full(chunk).tokens, (w, h)


def test_decode_resizes_like_mistral_common():
    config = ImageConfig(8, 64, 2)
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 255, (70, 50, 3), dtype=np.uint8))
    out = io.BytesIO()
    original.save(out, "PNG")
    ours = decode(out.getvalue(), config, 10_000)
    assert ours.size == model_size(50, 70, config) == (48, 64)
    reference = ImageEncoder(config, SpecialImageIDs(10, 12, 13))(ImageChunk(image=original)).image
    again = ImageEncoder(config, SpecialImageIDs(10, 12, 13))(ImageChunk(image=ours)).image
    diff = np.abs(reference - again)
    # the same cubic resize, rounded to 8 bits and clipped where cubic overshoots 0..255
    assert diff.mean() < 0.01 and np.percentile(diff, 95) < 0.02


def test_pixel_cap_is_checked_on_the_header(monkeypatch):
    big = io.BytesIO()
    Image.new("L", (300, 300)).save(big, "PNG")
    calls = []
    monkeypatch.setattr(Image.Image, "load", lambda self: calls.append(self))
    with pytest.raises(images.ImageProblem, match="300x300"):
        decode(big.getvalue(), ImageConfig(8, 64, 2), 300 * 299)
    assert not calls  # refused before any pixel was decoded


def test_images_decode_in_worker_threads(monkeypatch):
    seen = []
    real = images.decode
    monkeypatch.setattr(images, "decode", lambda *a: seen.append(threading.current_thread()) or real(*a))

    async def run():
        from server.chat.images import ImageLimits, _one
        data = io.BytesIO()
        Image.new("RGB", (20, 20)).save(data, "PNG")
        import base64
        url = "data:image/png;base64," + base64.b64encode(data.getvalue()).decode()
        limits = ImageLimits()
        with limits.pool.admit(1) as batch:
            return await _one(url, limits, ImageConfig(8, 64, 2), batch)

    import asyncio
    assert asyncio.run(run()).size == (32, 32)
    assert seen and seen[0] is not threading.main_thread()


def test_grid_tokens_are_never_zero():
    for w, h in SIZES:
        cols, rows = grid_tokens(w, h, ImageConfig(14, 1540, 2))
        assert cols >= 1 and rows >= 1


def test_pixtral_processor_imports_without_torchvision():
    """The vLLM plugin puts transformers' PIL-only twin where vLLM's Pixtral model imports from."""
    code = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('torchvision') is None, 'torchvision is installed'\n"
        "from server.engine.vision_plugin import register\n"
        "register()\n"
        "from transformers.models.pixtral.image_processing_pixtral import _num_image_tokens\n"
        "print(_num_image_tokens((64, 48), (8, 8)))\n"
    )
    if subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0:
        pytest.skip("torchvision is installed here: the plugin has nothing to do")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["(8,", "6)"]
    plain = subprocess.run(
        [sys.executable, "-c", "import transformers.models.pixtral.image_processing_pixtral"],
        capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0 and "torchvision" in plain.stderr  # what the plugin fixes


def test_plugin_is_registered_for_vllm():
    from importlib.metadata import entry_points

    names = {ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert "server.engine.vision_plugin:register" in names


# -- decoding big images in bounded memory -----------------------------------------------------
@pytest.mark.parametrize("src,dst", [((4000, 3000), (1540, 1162)), ((3001, 1999), (1540, 1036)),
                                     ((1541, 200), (1540, 200)), ((50, 70), (48, 64)),
                                     ((16, 16), (64, 64)), ((9000, 5), (64, 16)), ((3, 2000), (16, 64))])
def test_banded_resize_gives_opencvs_pixels(src, dst):
    """to_model_size vs mistral-common's own computation (the whole image in float32, one
    cv2.resize): the same 8-bit pixels but for float rounding at .5 boundaries."""
    import cv2

    from server.chat.pixels import to_model_size

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    reference = cv2.resize(pixels.astype(np.float32), dst, interpolation=cv2.INTER_CUBIC)
    reference = np.clip(np.rint(reference), 0, 255).astype(np.uint8)
    ours = np.asarray(to_model_size(Image.fromarray(pixels), dst))
    differ = ours != reference
    assert np.abs(ours.astype(int) - reference).max() <= 1
    assert differ.mean() < 1e-4, differ.sum()


def test_big_image_decodes_like_mistral_common():
    """An 8x downscale (past the 2x where a reduce-first shortcut would blur noise away):
    the parity test's tolerance holds for the pixels the model sees."""
    config = ImageConfig(8, 256, 2)
    rng = np.random.default_rng(2)
    original = Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8))
    out = io.BytesIO()
    original.save(out, "PNG", compress_level=1)
    ours = decode(out.getvalue(), config, 10**8)
    assert ours.size == model_size(2000, 1500, config) == (256, 192)
    encoder = ImageEncoder(config, SpecialImageIDs(10, 12, 13))
    reference = encoder(ImageChunk(image=original)).image
    again = encoder(ImageChunk(image=ours)).image
    diff = np.abs(reference - again)
    assert diff.mean() < 0.01 and np.percentile(diff, 95) < 0.02


def test_transparency_and_palettes_convert_like_mistral_common():
    config = ImageConfig(8, 64, 2)
    rng = np.random.default_rng(3)
    rgba = Image.fromarray(rng.integers(0, 255, (300, 200, 4), dtype=np.uint8), "RGBA")
    for image in (rgba, rgba.convert("P"), rgba.convert("LA"), rgba.convert("L")):
        out = io.BytesIO()
        image.save(out, "PNG")
        encoder = ImageEncoder(config, SpecialImageIDs(10, 12, 13))
        reference = encoder(ImageChunk(image=image)).image
        again = encoder(ImageChunk(image=decode(out.getvalue(), config, 10**6))).image
        diff = np.abs(reference - again)  # 8 bits, clipped where cubic overshoots 0..255
        assert diff.mean() < 0.01 and np.percentile(diff, 95) < 0.02, image.mode


def test_no_full_size_float_copy():
    """numpy's allocations (tracemalloc sees them) stay a band's worth, not the whole image's:
    a 4000x3000 RGB image in float32 would be 144 MB."""
    import tracemalloc

    out = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(out, "PNG")
    tracemalloc.start()
    try:
        image = decode(out.getvalue(), ImageConfig(14, 1540, 2), 40_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.size == (1540, 1176)
    assert np.asarray(image)[500, 500].tolist() == [10, 200, 30]
    assert peak < 40 * 2**20, peak / 2**20


def png_bytes(size, mode="RGB"):
    out = io.BytesIO()
    Image.new(mode, size).save(out, "PNG")
    return out.getvalue()


def refused_before_loading(monkeypatch, data, code, **kwargs):
    calls = []
    monkeypatch.setattr(Image.Image, "load", lambda self: calls.append(self))
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda self: calls.append(self))
    with pytest.raises(images.ImageProblem) as info:
        decode(data, ImageConfig(14, 1540, 2), 40_000_000, **kwargs)
    assert info.value.code == code, str(info.value)
    assert not calls  # refused on the header, before any pixel was decoded
    return str(info.value)


def test_decode_budget_counts_full_size_for_png_and_gif(monkeypatch):
    message = refused_before_loading(monkeypatch, png_bytes((300, 300)), "image_decode_too_large",
                                     decode_max_pixels=300 * 299)
    assert "300x300" in message and "89,700" in message
    gif = io.BytesIO()
    Image.new("P", (300, 300)).save(gif, "GIF")
    refused_before_loading(monkeypatch, gif.getvalue(), "image_decode_too_large",
                           decode_max_pixels=300 * 299)


def test_decode_budget_counts_webp_three_times(monkeypatch):
    webp = io.BytesIO()
    Image.new("RGB", (100, 100)).save(webp, "WEBP")
    refused_before_loading(monkeypatch, webp.getvalue(), "image_decode_too_large",
                           decode_max_pixels=3 * 100 * 100 - 1)
    monkeypatch.undo()
    assert decode(webp.getvalue(), ImageConfig(8, 64, 2), 10**6, 3 * 100 * 100).size == (64, 64)


def test_jpegs_within_the_budget_decode_whole_baseline_over_it_at_a_reduced_scale(monkeypatch):
    pixels = _natural_pixels(1000, 750)
    baseline, progressive = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(baseline, "JPEG", quality=95)
    Image.fromarray(pixels).save(progressive, "JPEG", quality=95, progressive=True)
    config = ImageConfig(8, 64, 2)
    whole = decode(baseline.getvalue(), config, 10**8, 1000 * 750)
    reduced = decode(baseline.getvalue(), config, 10**8, 1000 * 750 - 1)  # 1/8 scale: 125x94
    assert whole.size == reduced.size == (64, 48)
    encoder = ImageEncoder(config, SpecialImageIDs(10, 12, 13))
    reference = encoder(ImageChunk(image=Image.open(io.BytesIO(baseline.getvalue())))).image
    assert np.abs(reference - encoder(ImageChunk(image=whole)).image).mean() < 0.01  # parity
    assert np.abs(reference - encoder(ImageChunk(image=reduced)).image).mean() > 0.01  # smoother
    monkeypatch.setattr(Image.Image, "draft", lambda *a: pytest.fail("a multi-scan JPEG drafted"))
    assert decode(progressive.getvalue(), config, 10**8, 2 * 1000 * 750).size == (64, 48)
    monkeypatch.undo()
    refused_before_loading(monkeypatch, progressive.getvalue(), "image_decode_too_large",
                           decode_max_pixels=2 * 1000 * 750 - 1)


def _natural_pixels(width, height):
    """Photo-like pixels: noise with a 1/f amplitude spectrum."""
    rng = np.random.default_rng(4)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    amplitude = 1 / np.maximum(np.hypot(fx, fy), 1 / max(width, height))
    planes = []
    for _ in range(3):
        plane = np.fft.irfft2(amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape)),
                              s=(height, width))
        planes.append(np.clip(128 + 48 * (plane - plane.mean()) / plane.std(), 0, 255))
    return np.stack(planes, axis=-1).astype(np.uint8)


def test_jpeg_with_many_scans_is_refused_before_decoding(monkeypatch):
    """Each scan is a pass over the whole image: a few bytes each, so thousands of them would
    decode for minutes."""
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (1, 2, 3)).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    last = data.rindex(b"\xff\xda")
    assert data.count(b"\xff\xda") <= images.MAX_JPEG_SCANS
    bomb = data[:-2] + data[last:-2] * images.MAX_JPEG_SCANS + b"\xff\xd9"
    message = refused_before_loading(monkeypatch, bomb, "image_too_many_scans")
    assert f"at most {images.MAX_JPEG_SCANS}" in message


def _png_with_chunks(extra: int) -> bytes:
    import struct
    import zlib

    empty = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
    png = png_bytes((16, 16))
    return png[:33] + empty * extra + png[33:]


def _gif_with_sub_blocks(extra: int) -> bytes:
    out = io.BytesIO()
    Image.new("P", (16, 16)).save(out, "GIF")
    gif = out.getvalue()
    first = gif.index(b"\x2c", 13)  # the image descriptor (after the colour table)
    return gif[:first] + b"\x21\xfe" + b"\x01x" * extra + b"\x00" + gif[first:]


def _jpeg_with_segments(extra: int, junk: bytes = b"") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "JPEG")
    jpeg = out.getvalue()
    after_app0 = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:after_app0] + (junk + b"\xff\xfe\x00\x02") * extra + jpeg[after_app0:]


@pytest.mark.parametrize("build", [_png_with_chunks, _gif_with_sub_blocks, _jpeg_with_segments,
                                   lambda n: _jpeg_with_segments(n // 2, b"\0" * 16)],
                         ids=["png chunks", "gif sub-blocks", "jpeg segments", "jpeg junk"])
def test_files_with_too_many_segments_are_refused_before_pillow_parses_them(monkeypatch, build):
    """Pillow reads segments one by one in Python (~3 us each, the GIL held): 10 MB of empty
    ones is seconds of CPU for a 16x16 image. Refused before Image.open."""
    config = ImageConfig(8, 64, 2)
    assert decode(build(images.MAX_SEGMENTS - 20), config, 10**6).size == (16, 16)
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened"))
    with pytest.raises(images.ImageProblem) as info:
        decode(build(images.MAX_SEGMENTS + 1), config, 10**6)
    assert info.value.code == "image_too_many_segments"
