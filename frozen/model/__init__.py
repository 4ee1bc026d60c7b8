"""What a user loads: :class:`FrozenModel` and its parts.

Owns the vision backbones (``vision``), the prefix mapper (``mapper``), frozen-LM loading (``lm``),
prompts with ``<image>`` markers (``prompts``), interleaved generation (``generation``) and the
model itself with its safetensors export (``frozen_model``).
May import: ``frozen.config``, ``frozen.errors``. Never ``frozen.data``, ``frozen.train`` or ``frozen.eval``.
"""

from frozen.model.frozen_model import FrozenModel, FrozenOutput

__all__ = ["FrozenModel", "FrozenOutput"]
