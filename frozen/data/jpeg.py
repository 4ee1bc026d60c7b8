"""Decoding a JPEG at the size the pad-and-resize needs, with libjpeg-turbo's DCT scaling (through simplejpeg).

The image transform (:func:`frozen.model.vision.image_transform`) pads an image to a square of its longer
side and resizes that square to ``S x S``; a 640 x 480 photo becomes 224 x 224, so most of a full decode's
pixels are thrown away by the resize. libjpeg-turbo can instead decode at ``M/8`` of the stored size by
scaling its inverse DCT, which is cheaper to decode and leaves a much smaller image to resize.
:func:`reduced_scale` picks the smallest ``M`` of :data:`SCALES` after which the longer side is still at
least ``S`` (so the resize still only shrinks): 3/8 for a 640 x 480 photo at 224 px (240 x 180).

Only ``M <= 4`` is used: libjpeg-turbo's 5/8-7/8 inverse DCTs are not SIMD and decode slower than a full
decode (measured on 640 x 480 photos: 1.3-1.9 ms against 0.9 ms), so those images are decoded in full.
PIL's ``draft`` would offer only 1/2, 1/4 and 1/8 (320 x 240 for the photo above, a resize 2x as costly).

A full decode (``target`` None, or an image too small to reduce) goes through libjpeg-turbo here too, so
``data.jpeg_draft`` changes only the scale: it gives exactly PIL's pixels (tested: 4:2:0/4:2:2/4:4:4,
progressive, grayscale) at PIL's speed (``make bench``'s ``decode_only``). What this module does not
take -- other formats, CMYK/YCCK JPEGs (libjpeg-turbo's CMYK -> RGB is not PIL's), images over PIL's
decompression-bomb limit, and anything libjpeg-turbo reports as damaged -- returns None, and
:func:`frozen.data.samples.decode_image` decodes it with PIL in full as before, so bad-data handling is
unchanged. ``data.jpeg_draft=false`` turns the reduction off (docs/data.md gives the pixel differences).
"""

from __future__ import annotations

import simplejpeg
from PIL import Image

SCALES = (1, 2, 3, 4)  # the reductions used, in eighths, smallest first (8 = full decode)
FULL = 8
RGB_SOURCES = ("YCbCr", "Gray", "RGB")  # header colour spaces whose RGB output equals PIL's


def reduced_scale(size: tuple[int, int], target: int | None) -> int:
    """The smallest ``M`` of :data:`SCALES` after which the longer side, ``ceil(longer * M / 8)`` as libjpeg
    rounds it, is still >= ``target``; :data:`FULL` (8) when none is, or without a target."""
    if not target:
        return FULL
    longer = max(size)
    return next((m for m in SCALES if -(-longer * m // 8) >= target), FULL)


def decode_jpeg(data: bytes, target: int | None = None) -> Image.Image | None:
    """An RGB image of JPEG ``data`` decoded by libjpeg-turbo at :func:`reduced_scale` of its size for the
    image size ``target`` (None: in full); None for what it does not take (see the module docstring). Callers
    pass JPEG bytes (:func:`frozen.data.samples.decode_image` sniffs them); other bytes fail simplejpeg's header
    parse (ValueError) and give None too."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in RGB_SOURCES or height * width > (Image.MAX_IMAGE_PIXELS or float("inf")):
            return None
        m = reduced_scale((width, height), target)
        # simplejpeg decodes at the smallest libjpeg-turbo scale whose output is at least this size: M/8
        # (ceil, as libjpeg rounds), since any smaller scale gives a smaller side.
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-height * m // 8),
                                        min_width=-(-width * m // 8))  # uint8 [h, w, 3]
    except ValueError:  # simplejpeg's error for anything libjpeg-turbo warns or fails about (strict=True)
        return None
    return Image.fromarray(pixels)  # mode RGB from the [h, w, 3] uint8 array


__all__ = ["SCALES", "FULL", "reduced_scale", "decode_jpeg"]
