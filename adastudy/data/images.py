"""Decoding the encoded face images every reader returns (JPEG, PNG, BMP) with Pillow.

The readers hand out encoded bytes, not pixels, so a training pipeline decodes in its
own worker processes; this module is the one place that turns those bytes into an
array, and the one place that says, in one line, which image could not be decoded.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, UnidentifiedImageError

from adastudy.data.base import DataError

__all__ = ["decode_image"]

# What Pillow raises on bytes that are not a (whole) image: UnidentifiedImageError is an
# OSError, as is "image file is truncated"; broken PNG chunks raise SyntaxError; a cut
# header raises EOFError or struct.error; huge dimensions raise DecompressionBombError.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


def decode_image(data: bytes, where: str) -> np.ndarray:
    """The pixels of the encoded image `data`: uint8, H x W x 3, RGB.

    Grayscale, palette, RGBA and CMYK images are converted to RGB (an alpha channel is
    dropped, not composited), so every face reaches a model with three channels.
    `where` names the image in the error, e.g. "train.rec: record 17": bytes Pillow
    cannot decode, including a truncated file, raise `DataError` with
    "<where>: cannot decode the image (<Pillow's reason>)" on one line.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            # load() (or convert()) forces the full decode, so a truncated file fails
            # here, not later. An RGB image (most faces) is not converted: a copy less.
            if image.mode == "RGB":
                image.load()
            else:
                image = image.convert("RGB")
            pixels = np.asarray(image)  # uint8 (an explicit dtype costs ~10 % here)
    except _DECODE_ERRORS as exc:
        if isinstance(exc, UnidentifiedImageError):
            # Pillow's message names the BytesIO object (a new address each run).
            reason = "not an image format Pillow knows"
        else:
            reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{where}: cannot decode the image ({reason})") from exc
    return pixels
