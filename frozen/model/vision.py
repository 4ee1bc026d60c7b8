"""Vision backbones chosen by name, each returning pooled features ``[B, C]``.

The paper trains an NF-ResNet-50 from scratch; torchvision ResNets and a small CNN are here for
comparison and for fast offline runs. Every backbone takes images in ``[0, 1]`` and normalises them
itself (``mean``/``std`` buffers), so data pipelines, evaluation and ``generate`` share one input
convention: float ``[B, 3, S, S]`` in ``[0, 1]``, produced by :func:`image_transform`.
"""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torch import nn

from frozen.errors import FrozenConfigError, InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Wraps a trunk so that ``forward(images [B,3,S,S] in [0,1]) -> [B, C]``; ``num_features == C``."""

    def __init__(self, trunk: nn.Module, num_features: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.trunk = trunk
        self.num_features = num_features
        # Non-persistent: normalisation is a property of the backbone name, not a trained weight.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.trunk(x)  # [B, C]


class TinyCNN(nn.Module):
    """Four stride-2 conv blocks + global average pool: ~0.4M parameters, fast on a CPU at 64 px."""

    def __init__(self, width: int = 64):
        super().__init__()
        chans = [3, width // 2, width, width * 2, width * 4]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.GroupNorm(8, cout), nn.GELU()]
        self.features = nn.Sequential(*layers)
        self.num_features = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))  # [B, C]


def _nf_resnet50(pretrained: bool) -> Backbone:
    import timm  # imported lazily: timm import costs ~1 s

    # num_classes=0 drops the classifier; timm then returns globally pooled features [B, 2048].
    trunk = timm.create_model("nf_resnet50", pretrained=pretrained, num_classes=0)
    cfg = trunk.pretrained_cfg
    return Backbone(trunk, trunk.num_features, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))


def _torchvision_resnet(name: str) -> Callable[[bool], Backbone]:
    def build(pretrained: bool) -> Backbone:
        import torchvision

        weights = "DEFAULT" if pretrained else None
        trunk = getattr(torchvision.models, name)(weights=weights)
        num_features = trunk.fc.in_features
        trunk.fc = nn.Identity()  # keep the global average pool, drop the ImageNet head -> [B, C]
        return Backbone(trunk, num_features)

    return build


def _tiny_cnn(pretrained: bool) -> Backbone:
    if pretrained:
        raise FrozenConfigError("vision 'tiny_cnn' has no pretrained weights; set vision_pretrained=false")
    trunk = TinyCNN()
    return Backbone(trunk, trunk.num_features, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


BACKBONES: dict[str, Callable[[bool], Backbone]] = {
    "nf_resnet50": _nf_resnet50,
    "resnet18": _torchvision_resnet("resnet18"),
    "resnet50": _torchvision_resnet("resnet50"),
    "tiny_cnn": _tiny_cnn,
}


def vision_problem(name: str) -> str | None:
    """One line if ``name`` is not a backbone of :data:`BACKBONES` (used by build_vision and preflight)."""
    if name in BACKBONES:
        return None
    return f"unknown vision backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}"


def build_vision(name: str, *, pretrained: bool = False) -> Backbone:
    """Build a backbone by name. ``pretrained=True`` downloads ImageNet weights (needs the network)."""
    problem = vision_problem(name)
    if problem:
        raise FrozenConfigError(problem)
    return BACKBONES[name](pretrained)


def pad_to_square(image: Image.Image) -> Image.Image:
    """Zero-pad (black) the shorter side, centring the image, as the paper does before resizing."""
    image = image.convert("RGB")
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def image_transform(image_size: int, dtype: torch.dtype = torch.float32) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> tensor ``[3, S, S]``: pad to square, then bicubic resize. ``float32`` (default): in
    ``[0, 1]``; ``uint8``: the resized pixels as they are (what the training loader ships, a quarter of the
    bytes; :func:`to_unit_float` turns them into exactly the float32 values on the model's device)."""
    import torchvision.transforms.functional as TF

    if dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"image_transform makes float32 or uint8 tensors, not {dtype}")

    def transform(image: Image.Image) -> torch.Tensor:
        square = pad_to_square(image)
        if square.size != (image_size, image_size):
            square = square.resize((image_size, image_size), Image.Resampling.BICUBIC)
        pixels = TF.pil_to_tensor(square)  # uint8 [3, S, S]
        return pixels if dtype == torch.uint8 else to_unit_float(pixels)

    return transform


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in ``[0, 1]`` (``x / 255``, the values :func:`image_transform` gives in float32);
    anything else is returned unchanged (and checked by :func:`check_images`)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def check_images(images: torch.Tensor, image_size: int, values: bool = True) -> None:
    """Raise a one-line error unless ``images`` is ``[B, 3, S, S]`` with S == image_size, finite float or uint8.

    ``values=False`` checks shape and dtype only: the finiteness of float images is a value the host must
    read (it waits for the device), which a compiled graph cannot do without breaking in two."""
    if (
        not torch.is_tensor(images)
        or images.dim() != 4
        or images.shape[1] != 3
        or tuple(images.shape[2:])
        != (
            image_size,
            image_size,
        )
    ):
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise InputError(
            f"images must be a float tensor [B, 3, {image_size}, {image_size}] in [0, 1], got {shape}; "
            f"use frozen.model.vision.image_transform({image_size}) or model.preprocess(pil_image)"
        )
    if not images.is_floating_point() and images.dtype != torch.uint8:
        raise InputError(f"images must be floating point in [0, 1] or uint8 pixels, got dtype {images.dtype}")
    if images.dtype == torch.uint8 or not values:
        return  # pixels 0-255: always finite; to_unit_float scales them
    # A NaN would otherwise flow through the encoder and the LM and decode quietly. One scalar
    # reduction over [B, 3, S, S]; the per-image indices are only computed for the message.
    if not bool(torch.isfinite(images).all()):
        bad = torch.isfinite(images).flatten(1).all(dim=1).logical_not().nonzero().flatten().tolist()  # [n_bad]
        raise InputError(f"images {bad[:5]} hold NaN or infinite values; images must be finite, in [0, 1] "
                         "(check the decoding and normalisation that produced them)")


__all__ = [
    "Backbone",
    "BACKBONES",
    "build_vision",
    "vision_problem",
    "image_transform",
    "to_unit_float",
    "pad_to_square",
    "check_images",
]
