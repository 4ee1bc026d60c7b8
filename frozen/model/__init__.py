"""What a user loads: :class:`FrozenModel` and its parts.

Owns the vision backbones (``vision``), the prefix mapper (``mapper``), frozen-LM loading (``lm``),
prompts as data (``prompts``: text segments and images), interleaved generation (``embedding``:
prompts -> LM inputs; ``decoding``: greedy loops; ``generation``: options, ``generate``,
``generate_shared``), the model itself (``frozen_model``) and its export: the format, file names and
path lookup (``export``), the model card (``card``) and the Hub transfer (``hub``). Inside the
package, arrows point one way: ``frozen_model`` -> ``generation`` -> ``embedding``/``decoding`` ->
``prompts``/``vision``, and ``frozen_model`` -> ``hub``/``card`` -> ``export``/``lm``.
May import: ``frozen.config``, ``frozen.errors``, ``frozen.core``. Never ``frozen.data``, ``frozen.train``
or ``frozen.eval``.
"""

from frozen.model.frozen_model import FrozenModel, FrozenOutput

__all__ = ["FrozenModel", "FrozenOutput"]
