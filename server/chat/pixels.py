"""A decoded image → RGB at the model's size, as mistral-common computes it, in bounded memory.

mistral-common converts the whole image to RGB (transparent areas white), then to float32, then
resizes it with OpenCV's cubic interpolation. For a 40-megapixel image that is ~0.8 GB of copies.
``to_model_size`` gives the same pixels (to float rounding: a handful of 8-bit values per
megapixel differ by one) while holding at most one band of the source at a time:

- OpenCV's cubic resize is separable and reads, for each output row, 4 source rows (and for each
  output column, 4 source columns) at positions that depend only on the two sizes. ``_taps``
  computes them, and the weights, the way OpenCV does (positions in double precision, weights
  cast to float32).
- Output rows are made a band at a time: the source rows the band reads are cropped from the
  decoded image (still in its own mode, 1-4 bytes a pixel), converted to RGB, and only the rows
  the band needs become float32. The horizontal pass is OpenCV's own (``cv2.resize`` to the new
  width at the same height, whose vertical pass is then the identity); the vertical pass sums
  the 4 weighted rows in float32 in OpenCV's order.

So a downscale costs the decoded image plus a band (``_BAND_BYTES`` of source rows and their
copies), never a full-size RGB or float copy, and the float work is proportional to the rows
read (at most 4 per output row), not to the whole image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_BAND_BYTES = 2 * 1024 * 1024  # source rows cropped at once (before RGB conversion)
_A = -0.75  # OpenCV's cubic coefficient


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, transparent areas white (as mistral-common converts)."""
    if image.mode == "RGB":
        return image
    if image.mode != "RGBA":
        image = image.convert("RGBA")
    background = Image.new("RGBA", image.size, "WHITE")
    background.paste(image, (0, 0), image)
    return background.convert("RGB")


def _taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_CUBIC sampling from ``src`` to ``dst`` pixels: for each output index,
    the 4 source indices (clamped to the edge) and their float32 weights."""
    scale = 1.0 / (dst / src)  # as OpenCV: the inverse of the inverse scale, in double
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5
    start = np.floor(pos)
    x = pos - start
    w0 = ((_A * (x + 1) - 5 * _A) * (x + 1) + 8 * _A) * (x + 1) - 4 * _A
    w1 = ((_A + 2) * x - (_A + 3)) * x * x + 1
    w2 = ((_A + 2) * (1 - x) - (_A + 3)) * (1 - x) * (1 - x) + 1
    weights = np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=1).astype(np.float32)
    index = np.clip(start.astype(np.int64)[:, None] + np.arange(-1, 3), 0, src - 1)
    return index, weights


def to_model_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` (loaded, any mode) → RGB at ``size``: mistral-common's conversion and cubic
    resize, rounded back to 8 bits, a band of output rows at a time."""
    import cv2

    width, height = image.size
    out_w, out_h = size
    rows, row_weights = _taps(height, out_h)
    scale = height / out_h
    bytes_per_row = width * 4  # Pillow keeps 1-4 bytes a pixel; RGB conversion adds copies
    span = max(4, _BAND_BYTES // max(1, bytes_per_row))  # source rows cropped at once
    band = max(1, min(int((span - 4) / scale) + 1,  # output rows whose source rows fit the
                      _BAND_BYTES // (out_w * 12)))  # span, and whose float rows fit the band
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    for y0 in range(0, out_h, band):
        y1 = min(out_h, y0 + band)
        needed = np.unique(rows[y0:y1])
        top, bottom = int(needed[0]), int(needed[-1]) + 1
        strip = to_rgb(image.crop((0, top, width, bottom)))
        source = np.asarray(strip)[needed - top].astype(np.float32)
        # OpenCV's horizontal pass: same height, so its vertical pass is the identity
        across = cv2.resize(source, (out_w, len(needed)), interpolation=cv2.INTER_CUBIC)
        across = across.reshape(len(needed), out_w, 3)
        where = np.searchsorted(needed, rows[y0:y1])
        weights = row_weights[y0:y1, :, None, None]
        total = across[where[:, 0]] * weights[:, 0]
        for k in (1, 2, 3):
            total += across[where[:, k]] * weights[:, k]
        out[y0:y1] = np.clip(np.rint(total), 0, 255)
    return Image.fromarray(out, "RGB")
