"""frozen: multimodal few-shot learning with frozen language models (Tsimpoukelli et al., 2021).

    >>> from frozen import FrozenModel
    >>> frozen = FrozenModel.from_pretrained("gpt2", vision="tiny_cnn", image_size=64)
    >>> output = frozen(img, tokens)          # output.loss, output.logits

``FrozenModel`` is imported on first use (PEP 562): ``import frozen.prep...`` from
``scripts/make_shards.py`` then does not pay for torch + transformers (~6 s) before it can check
its arguments.
"""

from typing import TYPE_CHECKING, Any

__all__ = ["FrozenModel", "FrozenOutput"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from frozen.model.frozen_model import FrozenModel, FrozenOutput


def __getattr__(name: str) -> Any:
    if name in __all__:
        from frozen.model import frozen_model

        return getattr(frozen_model, name)
    raise AttributeError(f"module 'frozen' has no attribute {name!r}")
