"""Image parts → checked, decoded RGB images at the size the model sees, in prompt order.

Sources: ``data:`` URLs (base64) always; ``http(s)`` URLs only through ``server.chat.fetch``
(off unless the operator turns it on); nothing else, and never a local file. Every check that
can be made on the bytes or the header comes before decoding: the byte cap, the number of
segments Pillow would parse in Python, the format allowlist (PNG, JPEG, WebP, GIF — first
frame), the pixel cap, then the decode budget: the
pixels decoding holds at once. PNG, GIF and WebP have no reduced decoding, so their size
counts (WebP's three times: Pillow holds three copies); a progressive JPEG's counts twice (its
coefficient buffer is full size, whatever the output scale; its scans are capped too). A
baseline JPEG streams: within the budget it is decoded whole, over it at a reduced scale
(libjpeg's DCT scaling, ``draft``) that fits, which costs parity with mistral-common (a
smoother image; numbers in ``scripts/bench_image_decode.py --parity``). Decoding and resizing
run in ``server.chat.decode_pool`` (a few threads, shared fairly, behind a bounded queue: a
full queue is a 429); the resize holds at most a band of the image in float and gives
mistral-common's pixels (``server.chat.pixels``).

Each image is resized here to the grid mistral-common would give it (the same cubic resize),
so the prompt's ``[IMG]`` grid, vLLM's own processing of the image and what the model sees all
agree, and vLLM handles small images only. Rendering needs the grid, not the pixels:
``GridOnlyImageEncoder`` stands in for mistral-common's encoder in the server's tokenizer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mistral_common.tokens.tokenizers.image import ImageConfig, ImageEncoding
from PIL import Image, UnidentifiedImageError

from server.chat.decode_pool import Batch, DecodePool, QueueFull
from server.chat.fetch import FetchError, FetchPolicy, fetch
from server.chat.pixels import to_model_size
from server.errors import InvalidRequest, Overloaded
from server.model import ModelInfo
from server.protocol import ChatCompletionRequest, ImagePart, image_parts

Image.init()  # every format plugin registered (Image.open(formats=...) looks them up by name)
# Pillow's openers tried, and no others (JPEG's also opens MPO, what many phone cameras write).
FORMATS = tuple(f for f in ("PNG", "JPEG", "MPO", "WEBP", "GIF") if f in Image.OPEN)
# Scans a JPEG may have. Each scan is a pass over every coefficient of the whole image, whatever
# the scale it is decoded at (~25 ms per scan at 40 MP) and only a few bytes long, so a small
# file with thousands of them would decode for minutes. Encoders write 1-3 (baseline) or ~10
# (progressive). Counted as start-of-scan markers (FF DA) anywhere in the file: entropy-coded
# data never holds them, a marker segment might (an Exif thumbnail's own scans), so the count
# can only err high, and no segment layout can hide a scan from it.
MAX_JPEG_SCANS = 32
DECODE_MAX_PIXELS = 25_000_000  # the default image_decode_max_pixels
# Segments Pillow reads one by one in Python before (or around) the pixel data: a PNG's chunks,
# the extension sub-blocks before a GIF's first image, the marker segments before a JPEG's
# first scan. ~3 us each and the GIL held, so 10 MB of empty ones is ~2.5 s of CPU for a
# 16x16 image; real files have tens to a few thousand (1 MB PNG with 64 KB IDATs: 16).
MAX_SEGMENTS = 16384


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    decode_max_pixels: int = DECODE_MAX_PIXELS
    fetch: FetchPolicy = FetchPolicy()
    pool: DecodePool = field(default_factory=DecodePool, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> "ImageLimits":
        threads = settings.image_decode_threads
        return cls(
            max_bytes=settings.image_max_bytes,
            max_pixels=settings.image_max_pixels,
            decode_max_pixels=settings.image_decode_max_pixels,
            pool=DecodePool(**({"threads": threads} if threads else {}),
                            queue=settings.image_decode_queue),
            fetch=FetchPolicy(enabled=settings.image_fetch,
                              domains=tuple(settings.image_fetch_domains),
                              networks=tuple(settings.image_fetch_networks),
                              timeout=settings.image_fetch_timeout,
                              max_bytes=settings.image_max_bytes),
        )


class ImageProblem(Exception):
    """What is wrong with one image (user-facing), and its error code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


# -- grid ------------------------------------------------------------------------------------
def grid_tokens(width: int, height: int, config: ImageConfig) -> tuple[int, int]:
    """(columns, rows) of ``[IMG]`` tokens: mistral-common's rule (scale down to
    ``max_image_size``, then one token per ``patch x merge`` square, rounded up)."""
    w: float = width
    h: float = height
    ratio = max(h / config.max_image_size, w / config.max_image_size)
    if ratio > 1:
        w, h = max(round(w / ratio), 1), max(round(h / ratio), 1)
    step = config.image_patch_size * config.spatial_merge_size
    return (int(w) - 1) // step + 1, (int(h) - 1) // step + 1


def model_size(width: int, height: int, config: ImageConfig) -> tuple[int, int]:
    """The (width, height) in pixels mistral-common resizes an image to."""
    cols, rows = grid_tokens(width, height, config)
    step = config.image_patch_size * config.spatial_merge_size
    return cols * step, rows * step


class GridOnlyImageEncoder:
    """mistral-common's image encoder without the pixel work: the tokens of the grid only.

    The server renders prompts for their token ids; vLLM processes the pixels itself."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self.image_config: ImageConfig = encoder.image_config
        self.special_ids = encoder.special_ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def __call__(self, content: Any) -> ImageEncoding:
        image = getattr(content, "image", None)
        if not isinstance(image, Image.Image):
            raise TypeError("the server renders decoded images only")
        cols, rows = grid_tokens(image.width, image.height, self.image_config)
        ids = self.special_ids
        tokens = ([ids.img] * cols + [ids.img_break]) * rows
        tokens[-1] = ids.img_end
        return ImageEncoding(tokens=tokens, image=np.zeros((3, 0, 0), dtype=np.float32))


def render_grids_only(tokenizer: Any) -> None:
    """Make ``tokenizer`` (a mistral-common ``MistralTokenizer``) render image grids without
    computing pixels. Idempotent; a tokenizer without images is left alone."""
    instruct = tokenizer.instruct_tokenizer
    encoder = getattr(instruct, "image_encoder", None)
    if encoder is not None and not isinstance(encoder, GridOnlyImageEncoder):
        instruct.image_encoder = GridOnlyImageEncoder(encoder)


# -- bytes -----------------------------------------------------------------------------------
def data_url_bytes(url: str, max_bytes: int) -> bytes:
    head, comma, payload = url.partition(",")
    if not comma:
        raise ImageProblem("The data URL has no ',' before its data.", "invalid_image_url")
    meta = [p.strip().lower() for p in head[len("data:"):].split(";")]
    if "base64" not in meta[1:]:
        raise ImageProblem("Image data URLs must be base64-encoded, as in "
                           "'data:image/png;base64,...'.", "invalid_image_url")
    if meta[0] and not meta[0].startswith("image/"):
        raise ImageProblem(f"The data URL holds {meta[0]!r}, not an image.", "invalid_image_format")
    if len(payload) // 4 * 3 > max_bytes + 3:
        raise _too_large(max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        try:  # line-wrapped base64 (MIME style) is common
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ImageProblem("The data URL's base64 data is not valid.", "invalid_image") from None
    if not data:
        raise ImageProblem("The data URL holds no data.", "invalid_image")
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data


def _too_large(max_bytes: int) -> ImageProblem:
    return ImageProblem(f"The image is larger than the server's limit of "
                        f"{max_bytes / 1024 / 1024:g} MB.", "image_too_large")


# -- pixels ----------------------------------------------------------------------------------
def _segments(data: bytes) -> int:
    """How many segments Pillow would parse in Python (see MAX_SEGMENTS), counting stops once
    over the cap. Formats are told by their signature; anything else is left to Pillow."""
    count, end = 0, len(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):  # chunks: length, type, data, CRC
        pos = 8
        while pos + 8 <= end and count <= MAX_SEGMENTS:
            count += 1
            if data[pos + 4:pos + 8] == b"IEND":
                break
            pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    elif data.startswith(b"GIF8") and end >= 13:  # blocks until the first image descriptor
        pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # global colour table
        while pos < end and data[pos] == 0x21 and count <= MAX_SEGMENTS:  # an extension
            pos += 2  # introducer, label; then sub-blocks: a length byte and its data
            while pos < end and data[pos] and count <= MAX_SEGMENTS:
                count += 1
                pos += 1 + data[pos]
            pos += 1
    elif data.startswith(b"\xff\xd8"):  # marker segments until the first scan
        pos = 2
        while count <= MAX_SEGMENTS:
            start, pos = pos, data.find(b"\xff", pos)  # bytes between segments are skipped,
            if pos < 0 or pos + 1 >= end:  # by Pillow one at a time: 16 count as one segment
                break
            count += (pos - start) // 16
            marker = data[pos + 1]
            if marker == 0xDA:
                break
            count += 1
            if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # fill, no length
                pos += 1 if marker == 0xFF else 2
            else:
                pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return count


def decode(data: bytes, config: ImageConfig, max_pixels: int,
           decode_max_pixels: int = DECODE_MAX_PIXELS) -> Image.Image:
    """Bytes → RGB image at the model's size. The pixel cap and the decode budget are checked
    on the header, before any pixel is decoded."""
    segments = _segments(data)  # before Image.open: opening is what parses them
    if segments > MAX_SEGMENTS:
        raise ImageProblem(f"The image file has more than {MAX_SEGMENTS:,} chunks, blocks or "
                           "marker segments; the server decodes files of at most that many.",
                           "image_too_many_segments")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise ImageProblem("The data is not an image in an accepted format "
                               "(PNG, JPEG, WebP, GIF).", "invalid_image_format") from None
        except Image.DecompressionBombError:
            raise ImageProblem(f"The image has more than {max_pixels:,} pixels, the server's "
                               "limit.", "image_too_large") from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise ImageProblem("The image could not be decoded (corrupt header).",
                               "invalid_image") from None
        width, height = image.size
        if width < 1 or height < 1 or width * height > max_pixels:
            raise ImageProblem(f"The image is {width}x{height} pixels; the server's limit is "
                               f"{max_pixels:,} pixels.", "image_too_large")
        target = model_size(width, height, config)
        try:
            image.seek(0)  # animated GIF/WebP: the first frame
            # What decoding holds at once, in pixels of Pillow's 4 bytes: the image itself, ...
            cost = width * height
            if image.format in ("JPEG", "MPO"):
                scans = data.count(b"\xff\xda")  # start-of-scan markers (see MAX_JPEG_SCANS)
                if scans > MAX_JPEG_SCANS:
                    raise ImageProblem(f"The JPEG has {scans} scans; the server decodes JPEGs "
                                       f"of at most {MAX_JPEG_SCANS}.", "image_too_many_scans")
                if scans > 1:  # ... and a full-size coefficient buffer (3-6 bytes a pixel), ...
                    cost *= 2
                elif cost > decode_max_pixels:  # ... or, streaming one scan, a reduced scale
                    image.draft("RGB", target)  # (DCT scaling) when the whole would not fit
                    cost = image.width * image.height
            elif image.format == "WEBP":  # ... or libwebp's canvas, a bytes copy and the image
                cost *= 3
            if cost > decode_max_pixels:
                raise ImageProblem(
                    f"The image is {width}x{height} pixels; decoding it costs {cost:,} pixels of "
                    f"the server's decode budget of {decode_max_pixels:,} per image (PNG and GIF "
                    "count their size, progressive JPEG twice it, WebP three times).",
                    "image_decode_too_large")
            image.load()
            return to_model_size(image, target)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
            raise ImageProblem("The image could not be decoded (truncated or corrupt).",
                               "invalid_image") from None


def tiny_png_data_url() -> str:
    """A 16x16 grey PNG as a data URL (warm-up requests)."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


# -- requests --------------------------------------------------------------------------------
def check_images(req: ChatCompletionRequest, model: ModelInfo) -> list[tuple[str, ImagePart]]:
    """(param, part) of every image, after the checks that need no image data."""
    found = [(f"messages[{i}].content[{j}]", part) for i, j, part in image_parts(req)]
    if not found:
        return found
    if not model.vision:
        raise InvalidRequest(f"The model '{model.id}' does not accept images: it has no vision "
                             "encoder. Send text only.", param=found[0][0],
                             code="image_input_not_supported")
    if len(found) > model.image_limit:
        raise InvalidRequest(f"This request has {len(found)} images; '{model.id}' accepts at most "
                             f"{model.image_limit} per request.", param=found[model.image_limit][0],
                             code="too_many_images")
    return found


def _from_data_url(url: str, limits: ImageLimits, config: ImageConfig) -> Image.Image:
    data = data_url_bytes(url, limits.max_bytes)
    return decode(data, config, limits.max_pixels, limits.decode_max_pixels)


async def _one(url: str, limits: ImageLimits, config: ImageConfig, batch: Batch) -> Image.Image:
    scheme = url.split(":", 1)[0].strip().lower() if ":" in url else ""
    if scheme == "data":  # base64 decoding of megabytes belongs off the loop too
        return await batch.run(_from_data_url, url, limits, config)
    if scheme in ("http", "https"):
        data, _ = await fetch(url, limits.fetch)
        return await batch.run(decode, data, config, limits.max_pixels, limits.decode_max_pixels)
    shown = f"'{scheme}:' URLs are" if scheme else "a bare string is"
    raise ImageProblem(f"Images are sent as data: URLs (base64) or http(s) URLs; {shown} "
                       "not accepted.", "invalid_image_url")


async def load_images(req: ChatCompletionRequest, model: ModelInfo,
                      limits: ImageLimits) -> list[Image.Image]:
    """Every image of the request, in prompt order; the first bad one (in prompt order) is a
    400 naming it, and the request's images still waiting are dropped. A full decode queue is
    a 429 before any work."""
    found = check_images(req, model)
    if not found:
        return []
    assert model.image_config is not None
    try:
        batch = limits.pool.admit(len(found))
    except QueueFull:
        raise Overloaded(f"{found[0][0]}: the server is decoding as many images as it queues "
                         f"({limits.pool.queue}); retry shortly.", param=found[0][0],
                         code="image_decode_queue_full", headers={"Retry-After": "1"}) from None
    with batch:
        tasks = [asyncio.ensure_future(_one(part.url.strip(), limits, model.image_config, batch))
                 for _, part in found]
        try:
            images = []
            for (param, part), task in zip(found, tasks):
                try:
                    images.append(await task)
                except (ImageProblem, FetchError) as exc:
                    where = part.url_param(param) if exc.code in (
                        "invalid_image_url", "image_url_not_allowed", "image_fetch_disabled") else param
                    raise InvalidRequest(f"{param}: {exc}", param=where, code=exc.code) from None
            return images
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
