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
        return await _one(url, ImageLimits(), ImageConfig(8, 64, 2))

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
