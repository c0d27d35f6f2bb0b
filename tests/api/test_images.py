"""Image inputs through the real app over the scripted engine: shapes, sources, limits, errors."""

from __future__ import annotations

import base64
import http.server
import io
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server.tinymodel import TINY_IMAGE, write_tokenizer
from tests.api.harness import MODEL, serve, sse_events, text_tokens
from tests.conftest import tokenizer_for
from tests.spec import assert_error, assert_valid

IMG, IMG_BREAK, IMG_END = 10, 12, 13
ANSWER = "A small picture."


def vision_dir(root: Path, kind: str) -> Path:
    """What the server reads of a Pixtral-format checkpoint: params.json and tekken.json."""
    write_tokenizer(kind, root, image=TINY_IMAGE)
    (root / "params.json").write_text(json.dumps({"dim": 256, "vision_encoder": {
        "hidden_size": 128, "patch_size": TINY_IMAGE["image_patch_size"], "image_token_id": IMG}}))
    return root


@pytest.fixture(scope="module")
def v11(tmp_path_factory) -> Path:
    return vision_dir(tmp_path_factory.mktemp("v11-vision"), "v11-tekken")


def picture(seed: int, size: tuple[int, int] = (50, 70), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], len(mode)), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def ask(*parts, **extra) -> dict:
    content = [{"type": "text", "text": "What is in this image?"}, *parts]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 32,
            **extra}


def image_part(url: str, shape: str = "openai") -> dict:
    if shape == "openai":
        return {"type": "image_url", "image_url": {"url": url, "detail": "high"}}
    if shape == "mistral":
        return {"type": "image_url", "image_url": url}
    return {"image_url": url}  # vLLM's shorthand, no type


def grids(prompt: list[int]) -> list[tuple[int, int]]:
    """(columns, rows) of each [IMG] grid in a prompt."""
    out, cols, rows, run = [], 0, 0, 0
    for t in prompt:
        if t == IMG:
            run += 1
        elif t in (IMG_BREAK, IMG_END):
            cols, rows, run = run, rows + 1, 0
            if t == IMG_END:
                out.append((cols, rows))
                rows = 0
    return out


def answer(directory: Path) -> list[int]:
    return text_tokens(tokenizer_for(directory), ANSWER)


# -- what users get -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["openai", "mistral", "shorthand"])
def test_every_part_shape_reaches_the_engine_in_prompt_order(v11, shape):
    first, second = picture(1, (50, 70)), picture(2, (64, 20), "JPEG")
    body = {"model": MODEL, "messages": [
        {"role": "system", "content": "Describe images."},
        {"role": "user", "content": [image_part(data_url(first), shape),
                                     {"type": "text", "text": "and"},
                                     image_part(data_url(second, "image/jpeg"), shape)]},
        {"role": "assistant", "content": "Two pictures."},
        {"role": "user", "content": [{"type": "text", "text": "Again:"},
                                     image_part(data_url(first), shape)]}]}
    with serve(v11, lambda p, s, i: answer(v11)) as (client, fake):
        r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert_valid("CreateChatCompletionResponse", out)
    assert out["choices"][0]["message"]["content"] == ANSWER
    prompt, _, request_id = fake.requests[0]
    images = fake.images[request_id]
    # 64 px max, 16 px per token: 50x70 → 46x64 → 3x4 tokens; 64x20 → 4x2; resized to the grid
    assert [im.size for im in images] == [(48, 64), (64, 32), (48, 64)]
    assert all(im.mode == "RGB" for im in images)
    assert grids(prompt) == [(3, 4), (4, 2), (3, 4)]
    assert out["usage"]["prompt_tokens"] == len(prompt)
    assert np.array_equal(np.asarray(images[0]), np.asarray(images[2]))
    assert not np.array_equal(np.asarray(images[0])[:32], np.asarray(images[1])[:32])


def test_image_tokens_count_in_usage(v11):
    with serve(v11, lambda p, s, i: answer(v11)) as (client, fake):
        text_only = client.post("/v1/chat/completions", json=ask()).json()
        one = client.post("/v1/chat/completions", json=ask(image_part(data_url(picture(1))))).json()
    # one 3x4 grid: 12 [IMG], 3 [IMG_BREAK], 1 [IMG_END]
    assert one["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + 16


def test_stream_and_non_stream_agree_with_images(v11):
    body = ask(image_part(data_url(picture(3))), image_part(data_url(picture(4), "image/png"), "mistral"))
    with serve(v11, lambda p, s, i: answer(v11)) as (client, fake):
        plain = client.post("/v1/chat/completions", json=body).json()
        r = client.post("/v1/chat/completions",
                        json={**body, "stream": True, "stream_options": {"include_usage": True}})
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", e)
    text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in e["choices"])
    assert text == plain["choices"][0]["message"]["content"] == ANSWER
    assert events[-2]["usage"] == plain["usage"]
    assert fake.requests[0][0] == fake.requests[1][0]


@pytest.mark.parametrize("fmt,mode,mime", [
    ("PNG", "RGBA", "image/png"), ("PNG", "L", "image/png"), ("JPEG", "RGB", "image/jpeg"),
    ("WEBP", "RGB", "image/webp"), ("GIF", "RGB", "image/gif")])
def test_accepted_formats(v11, fmt, mode, mime):
    with serve(v11, lambda p, s, i: answer(v11)) as (client, fake):
        r = client.post("/v1/chat/completions", json=ask(image_part(data_url(picture(5, (40, 40), fmt, mode), mime))))
    assert r.status_code == 200, r.text
    (image,) = fake.images[fake.requests[0][2]]
    assert image.mode == "RGB" and image.size == (48, 48)


def test_gif_first_frame_and_transparency_is_white(v11):
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100)
    clear = io.BytesIO()
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(clear, "PNG")
    with serve(v11, lambda p, s, i: answer(v11)) as (client, fake):
        for data in (gif.getvalue(), clear.getvalue()):
            assert client.post("/v1/chat/completions", json=ask(image_part(data_url(data)))).status_code == 200
    red = np.asarray(fake.images[fake.requests[0][2]][0])
    white = np.asarray(fake.images[fake.requests[1][2]][0])
    assert red[..., 0].min() > 200 and red[..., 2].max() < 60
    assert white.min() == 255


def test_images_with_tools_and_structured_outputs(v11):
    tools = [{"type": "function", "function": {"name": "describe", "parameters": {
        "type": "object", "properties": {"what": {"type": "string"}}, "required": ["what"]}}}]
    with serve(v11, lambda p, s, i: answer(v11)) as (client, fake):
        r1 = client.post("/v1/chat/completions", json=ask(image_part(data_url(picture(1))), tools=tools,
                                                          tool_choice="required"))
        r2 = client.post("/v1/chat/completions", json=ask(image_part(data_url(picture(1))),
                                                          response_format={"type": "json_object"}))
    assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
    assert fake.requests[0][1].constraint is not None and fake.requests[1][1].constraint is not None
    assert len(fake.images[fake.requests[0][2]]) == 1 and grids(fake.requests[1][0]) == [(3, 4)]


def test_reasoning_model_with_an_image(tmp_path):
    directory = vision_dir(tmp_path, "v13-tekken")
    inner = tokenizer_for(directory).instruct_tokenizer.tokenizer
    tokens = ([inner.get_special_token("[THINK]")] + inner.encode("Looks red.", bos=False, eos=False)
              + [inner.get_special_token("[/THINK]")] + inner.encode("Red.", bos=False, eos=True))
    with serve(directory, lambda p, s, i: tokens) as (client, fake):
        r = client.post("/v1/chat/completions", json=ask(image_part(data_url(picture(1)))))
    msg = r.json()["choices"][0]["message"]
    assert (msg["reasoning"], msg["content"]) == ("Looks red.", "Red.")
    assert grids(fake.requests[0][0]) == [(3, 4)]


def test_models_report_vision(v11, tokenizer_dirs):
    with serve(v11, lambda p, s, i: []) as (client, _):
        assert client.get("/v1/models").json()["data"][0]["capabilities"]["vision"] is True
    with serve(tokenizer_dirs["v11-tekken"], lambda p, s, i: []) as (client, _):
        assert client.get("/v1/models").json()["data"][0]["capabilities"]["vision"] is False


# -- models that cannot see -----------------------------------------------------------------------
def test_hf_layout_vision_checkpoints_serve_images_only_in_mistral_format(tmp_path):
    """With a config.json vLLM would load Mistral3ForConditionalGeneration, which expands the
    rendered [IMG] grids again: images only with config_format mistral."""
    directory = vision_dir(tmp_path, "v11-tekken")
    (directory / "config.json").write_text(json.dumps({"architectures": ["Mistral3ForConditionalGeneration"]}))
    with serve(directory, lambda p, s, i: []) as (client, _):
        assert client.get("/v1/models").json()["data"][0]["capabilities"]["vision"] is False
    with serve(directory, lambda p, s, i: [], engine_args={"config_format": "mistral",
                                                           "load_format": "mistral"}) as (client, _):
        assert client.get("/v1/models").json()["data"][0]["capabilities"]["vision"] is True


def test_text_only_models_refuse_images_clearly(v11, tokenizer_dirs):
    body = ask(image_part(data_url(picture(1))))
    for directory, settings in ((tokenizer_dirs["v11-tekken"], {}), (tokenizer_dirs["v3-spm"], {}),
                                (v11, {"capabilities": {"vision": False}}),
                                (v11, {"engine_args": {"language_model_only": True}})):
        with serve(directory, lambda p, s, i: [], **settings) as (client, fake):
            err = assert_error(client.post("/v1/chat/completions", json=body), 400,
                               "messages[0].content[1]", "image_input_not_supported")
            assert "does not accept images" in err["message"]
            assert client.post("/v1/chat/completions", json=ask()).status_code == 200
        assert len(fake.requests) == 1


# -- bad input: a 400 naming the part, and the server keeps serving ----------------------------------
def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


BMP = io.BytesIO()
Image.new("RGB", (8, 8)).save(BMP, "BMP")
BAD = [
    ("truncated", data_url(picture(1, (64, 64))[:300]), "messages[0].content[1]", "invalid_image"),
    ("not an image", data_url(b"hello, world"), "messages[0].content[1]", "invalid_image_format"),
    ("bmp", data_url(BMP.getvalue(), "image/bmp"), "messages[0].content[1]", "invalid_image_format"),
    ("bomb", data_url(png_header(100_000, 100_000)), "messages[0].content[1]", "image_too_large"),
    ("bad base64", "data:image/png;base64,%%%%", "messages[0].content[1]", "invalid_image"),
    ("not base64", "data:image/png,rawbytes", "messages[0].content[1].image_url.url", "invalid_image_url"),
    ("text data", "data:text/plain;base64,aGk=", "messages[0].content[1]", "invalid_image_format"),
    ("file", "file:///etc/passwd", "messages[0].content[1].image_url.url", "invalid_image_url"),
    ("ftp", "ftp://example.com/a.png", "messages[0].content[1].image_url.url", "invalid_image_url"),
    ("bare base64", base64.b64encode(picture(1)).decode(), "messages[0].content[1].image_url.url",
     "invalid_image_url"),
    ("empty", "", "messages[0].content[1].image_url.url", "invalid_image_url"),
    ("fetch off", "https://example.com/cat.png", "messages[0].content[1].image_url.url",
     "image_fetch_disabled"),
]


@pytest.mark.parametrize("url,param,code", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_images_are_400s_and_nothing_breaks(v11, url, param, code):
    with serve(v11, lambda p, s, i: answer(v11)) as (client, fake):
        for stream in (False, True):
            err = assert_error(client.post("/v1/chat/completions", json=ask(image_part(url), stream=stream)),
                               400, param, code)
            assert "messages[0].content[1]" in err["message"]
        assert client.post("/v1/chat/completions", json=ask(image_part(data_url(picture(1))))).status_code == 200
    assert len(fake.requests) == 1


def test_byte_and_pixel_caps(v11):
    big = picture(1, (64, 64))
    with serve(v11, lambda p, s, i: answer(v11), image_max_bytes=len(big) - 1, image_max_pixels=1000) as (client, fake):
        assert_error(client.post("/v1/chat/completions", json=ask(image_part(data_url(big)))), 400,
                     "messages[0].content[1]", "image_too_large")
        err = assert_error(client.post("/v1/chat/completions", json=ask(image_part(data_url(picture(1, (40, 40)))))),
                           400, "messages[0].content[1]", "image_too_large")
        assert "40x40" in err["message"] and "1,000" in err["message"]
        assert client.post("/v1/chat/completions", json=ask(image_part(data_url(picture(1, (30, 30)))))).status_code == 200


def test_image_count_limit_points_at_the_first_extra_image(v11):
    url = data_url(picture(1))
    with serve(v11, lambda p, s, i: answer(v11), image_limit=2) as (client, fake):
        body = {"model": MODEL, "messages": [
            {"role": "user", "content": [image_part(url), image_part(url)]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "and"}, image_part(url)]}]}
        err = assert_error(client.post("/v1/chat/completions", json=body), 400,
                           "messages[2].content[1]", "too_many_images")
        assert "3 images" in err["message"] and "at most 2" in err["message"]
        body["messages"] = body["messages"][:1]
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert len(fake.requests) == 1


@pytest.mark.parametrize("message", [
    {"role": "system", "content": [{"type": "image_url", "image_url": "data:image/png;base64,AAAA"}]},
    {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
])
def test_images_outside_user_messages(v11, message):
    body = {"model": MODEL, "messages": [message, {"role": "user", "content": "hi"}]}
    with serve(v11, lambda p, s, i: []) as (client, fake):
        err = assert_error(client.post("/v1/chat/completions", json=body), 400,
                           "messages[0].content[0]", "invalid_value")
    assert "only in user messages" in err["message"] and not fake.requests


def test_unknown_part_types_name_the_part(v11):
    body = ask({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}})
    with serve(v11, lambda p, s, i: []) as (client, _):
        err = assert_error(client.post("/v1/chat/completions", json=body), 400,
                           "messages[0].content[1]", "invalid_value")
    assert "'input_audio'" in err["message"]


# -- fetching ---------------------------------------------------------------------------------------
@contextmanager
def http_host(routes: dict[str, tuple]) -> Iterator[str]:
    """A loopback HTTP server. ``routes``: path → ("ok", body, content type), ("redirect",
    location) or ("stall",) (never answers); other paths are 404s."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            route = routes.get(self.path, ("missing",))
            if route[0] == "ok":
                self.send_response(200)
                self.send_header("Content-Type", route[2])
                self.send_header("Content-Length", str(len(route[1])))
                self.end_headers()
                self.wfile.write(route[1])
            elif route[0] == "redirect":
                self.send_response(302)
                self.send_header("Location", route[1])
                self.end_headers()
            elif route[0] == "stall":
                stop.wait(10)
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()


@pytest.fixture()
def image_host() -> Iterator[str]:
    """/cat.png, and /moved: a redirect to a private address."""
    with http_host({"/cat.png": ("ok", picture(7, (40, 30)), "image/png"),
                    "/moved": ("redirect", "http://10.0.0.5/cat.png")}) as url:
        yield url


def test_fetching_when_the_operator_allows_it(v11, image_host):
    allowed = {"image_fetch": True, "image_fetch_domains": ["127.0.0.1"],
               "image_fetch_networks": ["127.0.0.0/8"]}
    with serve(v11, lambda p, s, i: answer(v11), **allowed) as (client, fake):
        ok = client.post("/v1/chat/completions", json=ask(image_part(image_host + "/cat.png")))
        moved = client.post("/v1/chat/completions", json=ask(image_part(image_host + "/moved")))
        missing = client.post("/v1/chat/completions", json=ask(image_part(image_host + "/nope.png")))
    assert ok.status_code == 200, ok.text
    assert fake.images[fake.requests[0][2]][0].size == (48, 32)
    assert_error(moved, 400, "messages[0].content[1].image_url.url", "image_url_not_allowed")
    assert "404" in assert_error(missing, 400, "messages[0].content[1]", "image_fetch_failed")["message"]
    # loopback is private: without the operator's network exemption it is refused
    with serve(v11, lambda p, s, i: [], image_fetch=True, image_fetch_domains=["127.0.0.1"]) as (client, fake):
        assert_error(client.post("/v1/chat/completions", json=ask(image_part(image_host + "/cat.png"))),
                     400, "messages[0].content[1].image_url.url", "image_url_not_allowed")
        # a host outside the allowlist is refused before any lookup or connection
        assert_error(client.post("/v1/chat/completions", json=ask(image_part("https://93.184.216.34/a.png"))),
                     400, "messages[0].content[1].image_url.url", "image_url_not_allowed")
    assert not fake.requests


def test_a_malformed_redirect_is_a_400_not_a_500(v11):
    allowed = {"image_fetch": True, "image_fetch_domains": ["127.0.0.1"],
               "image_fetch_networks": ["127.0.0.0/8"]}
    with http_host({"/bad": ("redirect", "http://[x"), "/bad6": ("redirect", "//[::1/a.png")}) as host, \
            serve(v11, lambda p, s, i: answer(v11), **allowed) as (client, fake):
        for path in ("/bad", "/bad6"):
            err = assert_error(client.post("/v1/chat/completions", json=ask(image_part(host + path))),
                               400, "messages[0].content[1].image_url.url", "invalid_image_url")
            assert "redirect target is not a valid URL" in err["message"]
        assert client.get("/health").status_code == 200
    assert not fake.requests
