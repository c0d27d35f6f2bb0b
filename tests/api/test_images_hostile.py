"""Hostile images over the API (FakeEngine, the tiny vision tokenizer): every decode budget is a
400 naming the image part and the budget, a full decode queue is a 429, one request's images
cannot keep another's waiting, and the server keeps answering meanwhile."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from server.chat import images
from tests.api.harness import serve
from tests.api.test_images import answer, ask, data_url, image_part, picture, png_header, vision_dir
from tests.spec import assert_error, assert_valid

PART = "messages[0].content[1]"


@pytest.fixture(scope="module")
def v11(tmp_path_factory) -> Path:
    return vision_dir(tmp_path_factory.mktemp("v11-vision-hostile"), "v11-tekken")


def scan_bomb() -> bytes:
    """A small progressive JPEG whose last scan is repeated: each repeat is a pass over every
    coefficient of the image."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    return data[:-2] + data[data.rindex(b"\xff\xda"):-2] * images.MAX_JPEG_SCANS + b"\xff\xd9"


def webp(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size).save(out, "WEBP", lossless=True)
    return out.getvalue()


def chunk_spam() -> bytes:
    """A 16x16 PNG padded with empty chunks, one more than the server parses."""
    empty = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
    png = picture(1, (16, 16))
    return png[:33] + empty * images.MAX_SEGMENTS + png[33:]


HOSTILE = [
    # a few hundred bytes declaring 36 MP: under image_max_pixels (40 M), over the decode budget
    ("png decodes big", data_url(png_header(6000, 6000)), {}, "image_decode_too_large", "36,000,000"),
    ("webp counts thrice", data_url(webp((100, 100)), "image/webp"),
     {"image_decode_max_pixels": 29_999}, "image_decode_too_large", "30,000"),
    ("jpeg scan bomb", data_url(scan_bomb(), "image/jpeg"), {}, "image_too_many_scans", "scans"),
    ("png chunk spam", data_url(chunk_spam()), {}, "image_too_many_segments", "16,384"),
]


@pytest.mark.parametrize("url,settings,code,shown", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_decode_budgets_are_400s_naming_the_part_and_the_budget(v11, url, settings, code, shown):
    with serve(v11, lambda p, s, i: answer(v11), **settings) as (client, fake):
        for stream in (False, True):
            err = assert_error(client.post("/v1/chat/completions", json=ask(image_part(url), stream=stream)),
                               400, PART, code)
            assert err["message"].startswith(PART) and shown in err["message"]
        assert client.get("/health").status_code == 200
        ok = client.post("/v1/chat/completions", json=ask(image_part(data_url(picture(1)))))
        assert ok.status_code == 200, ok.text
        assert_valid("CreateChatCompletionResponse", ok.json())
    assert len(fake.requests) == 1  # nothing refused reached the engine


def test_a_big_image_within_the_budget_is_served(v11):
    """Just under the budget: decoded whole (no full-size float copy), at the model's size."""
    big = picture(2, (1200, 900))
    with serve(v11, lambda p, s, i: answer(v11), image_decode_max_pixels=1200 * 900) as (client, fake):
        r = client.post("/v1/chat/completions", json=ask(image_part(data_url(big))))
    assert r.status_code == 200, r.text
    assert fake.images[fake.requests[0][2]][0].size == (64, 48)


class GatedDecode:
    """images.decode, but images of ``size`` wait for ``release``; records the decode order."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.order: list[tuple[int, int]] = []
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.real = images.decode

    def __call__(self, data: bytes, *args):
        size = Image.open(io.BytesIO(data)).size
        self.order.append(size)
        if size == self.size:
            self.blocked.set()
            assert self.release.wait(30)
        return self.real(data, *args)


def wait_for(condition, what: str) -> None:
    stop = threading.Event()
    for _ in range(3000):
        if condition():
            return
        stop.wait(0.01)
    raise AssertionError(f"never happened: {what}")


def test_full_decode_queue_is_a_429_and_the_server_keeps_serving(v11, monkeypatch):
    gate = GatedDecode((40, 40))
    blocked = data_url(picture(3, (40, 40)))
    other = data_url(picture(4, (20, 30)))
    with serve(v11, lambda p, s, i: answer(v11), image_decode_queue=2,
               image_decode_threads=1) as (client, fake), ThreadPoolExecutor(1) as side:
        monkeypatch.setattr(images, "decode", gate)
        pool = client.app.state.server.service.image_limits.pool
        first = side.submit(client.post, "/v1/chat/completions",
                            json=ask(image_part(blocked), image_part(other)))
        try:
            assert gate.blocked.wait(30)  # both places taken, the only thread held
            for stream in (False, True):
                r = client.post("/v1/chat/completions", json=ask(image_part(other), stream=stream))
                err = assert_error(r, 429, PART, "image_decode_queue_full")
                assert r.headers["retry-after"] == "1" and "retry" in err["message"]
            assert client.get("/health").status_code == 200
            text = client.post("/v1/chat/completions", json=ask())  # no images: not queued
            assert text.status_code == 200, text.text
        finally:
            gate.release.set()
        assert first.result(30).status_code == 200
        assert pool.admitted == 0 and pool.running == 0
        again = client.post("/v1/chat/completions", json=ask(image_part(other)))
        assert again.status_code == 200, again.text
    assert gate.order == [(40, 40), (20, 30), (20, 30)]  # the refused requests decoded nothing


def test_one_requests_images_do_not_keep_anothers_waiting(v11, monkeypatch):
    """One decode thread; a request with four images holds it with its first. Another request
    sent meanwhile gets the thread next, before the first request's three other images."""
    gate = GatedDecode((40, 40))
    many = [image_part(data_url(picture(5 + i, (40, 40) if i == 0 else (41 + i, 40)))) for i in range(4)]
    one = image_part(data_url(picture(9, (20, 30))))
    with serve(v11, lambda p, s, i: answer(v11), image_decode_threads=1) as (client, fake), \
            ThreadPoolExecutor(2) as side:
        monkeypatch.setattr(images, "decode", gate)
        pool = client.app.state.server.service.image_limits.pool
        big = side.submit(client.post, "/v1/chat/completions", json=ask(*many))
        try:
            assert gate.blocked.wait(30)
            small = side.submit(client.post, "/v1/chat/completions", json=ask(one))
            wait_for(lambda: pool.waiting == 4, "three images of one request and one of another waiting")
        finally:
            gate.release.set()
        assert big.result(30).status_code == 200 and small.result(30).status_code == 200
    assert gate.order == [(40, 40), (20, 30), (42, 40), (43, 40), (44, 40)]
