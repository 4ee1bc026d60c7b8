"""Decoding a JPEG at the size the pad-and-resize needs, with libjpeg's DCT scaling (through PIL's ``draft``).

The image transform (:func:`frozen.model.vision.image_transform`) pads an image to a square of its longer
side and resizes that square to ``S x S``; a 640 x 480 photo becomes 224 x 224, so more than half of a full
decode's pixels are thrown away by the resize. libjpeg can instead decode at 1/2, 1/4 or 1/8 of the stored
size by scaling its inverse DCT, which is cheaper to decode and leaves a much smaller image to resize.
:func:`draft_to` picks the largest such reduction after which the longer side is still at least ``S`` (so
the resize still only shrinks). Other formats, and JPEGs whose longer side is under ``2 S - 1``, are decoded
as before, bit for bit. ``data.jpeg_draft=false`` turns it off (docs/data.md gives the pixel differences).
"""

from __future__ import annotations

from PIL import Image

DCT_SCALES = (8, 4, 2)  # the reductions PIL's draft asks libjpeg for, largest first (1 = full decode)
JPEG_FORMATS = ("JPEG", "MPO")  # PIL's formats decoded by its JPEG plugin (MPO: cameras' multi-picture JPEG)


def draft_scale(size: tuple[int, int], target: int) -> int:
    """The largest reduction (8, 4, 2; 1 = none) after which the longer side, ``ceil(longer / scale)`` as libjpeg
    rounds it, is still >= ``target``."""
    longer = max(size)
    return next((s for s in DCT_SCALES if -(-longer // s) >= target), 1)


def draft_to(image: Image.Image, target: int | None) -> int:
    """Configure an opened, not yet loaded JPEG to decode at :func:`draft_scale`; return that scale (1: untouched).

    PIL's ``draft`` takes the largest reduction ``s`` with ``s <= min(w // rw, h // rh)`` for a requested
    ``(rw, rh)``; asking for ``(w // s, h // s)`` makes that exactly our ``s`` (a side shorter than ``s``
    pixels makes PIL pick a smaller one, which only decodes more). Anything but a JPEG, or no ``target``, is
    left alone.
    """
    if not target or image.format not in JPEG_FORMATS:
        return 1
    scale = draft_scale(image.size, target)
    if scale > 1:
        w, h = image.size
        image.draft(None, (max(1, w // scale), max(1, h // scale)))  # None: keep libjpeg's colour conversion
    return scale


__all__ = ["DCT_SCALES", "draft_scale", "draft_to"]
