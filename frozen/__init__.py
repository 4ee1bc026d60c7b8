"""frozen: multimodal few-shot learning with frozen language models (Tsimpoukelli et al., 2021).

    >>> from frozen import FrozenModel
    >>> frozen = FrozenModel.from_pretrained("gpt2", vision="tiny_cnn", image_size=64)
    >>> output = frozen(img, tokens)          # output.loss, output.logits
"""

from frozen.model.frozen_model import FrozenModel, FrozenOutput

__all__ = ["FrozenModel", "FrozenOutput"]
__version__ = "0.1.0"
