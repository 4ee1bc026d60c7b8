"""Tiny offline stand-ins for hub assets: a byte-level BPE tokenizer and random GPT-2/Llama/Qwen2/OPT LMs.

Built in seconds, saved with ``save_pretrained`` so the real loading code (``frozen.model.lm``) reads them
exactly as it reads a hub checkout. Like GPT-2, the tokenizer has no pad token.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CORPUS = [
    "a red circle. a blue rectangle. a green triangle. a yellow circle. a gray rectangle.",
    "a teal triangle. a black circle. a brown rectangle. this is a dax. this is a blicket.",
    "Q: what color is the shape? A: red. Q: what shape is it? A: circle. yes no",
    "The quick brown fox jumps over the lazy dog. What is this? Answer with dax or blicket.",
    "0123456789 , . ? ! : ; ' \" ( ) - the of and to in is it that was for on are with as",
]
EOS = "<|endoftext|>"


@lru_cache(maxsize=None)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 400):
    """A GPT-2-like fast tokenizer (byte-level BPE, EOS, no pad token), built offline."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(_tokenizer_json(vocab_size))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def tiny_lm_config(kind: str, vocab_size: int, positions: int = 256):
    """A 2-layer, 32-wide random causal LM config of the given family with ``positions`` positions.

    initializer_range=0.2 (10x the usual) makes the random LM's output depend on its input enough
    that a trained visual prefix can steer it, so a few training steps visibly lower the loss.
    """
    from transformers import GPT2Config, LlamaConfig, OPTConfig, Qwen2Config

    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=positions, n_embd=32, n_layer=2, n_head=2,
                          bos_token_id=0, eos_token_id=0)
    if kind == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                           bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    if kind == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                           bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    if kind == "opt":
        return OPTConfig(vocab_size=vocab_size, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=positions, word_embed_proj_dim=32,
                         bos_token_id=0, eos_token_id=0, pad_token_id=None)
    raise ValueError(f"unknown tiny LM kind {kind!r}")


def _steerable(config):
    config.initializer_range = 0.2
    if hasattr(config, "init_std"):  # OPT
        config.init_std = 0.2
    return config


def save_tiny_lm(path: str | Path, kind: str = "gpt2", seed: int = 0, positions: int = 256) -> Path:
    """Write a random tiny LM (``positions``: its context length) + tokenizer to ``path`` in HF format."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(_steerable(tiny_lm_config(kind, len(tok), positions)))
    lm.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def script_lm(model, text: str) -> list:
    """Make ``model.lm`` (a FrozenModel's LM) write ``text`` and then EOS after any prompt, in every decoding
    path: its next token is looked up from the last input token (an id, or the row of the embedding table that
    ``inputs_embeds`` ends with), so cached, uncached, batched and shared-cache decoding all write ``text``.
    Counts LM calls in ``model.lm_calls``. Returns the hook handles (``h.remove()`` undoes it). For tests of
    what happens to generated text (stop strings), which a random LM cannot be made to write.
    """
    import torch

    tok, lm = model.tokenizer, model.lm
    script = tok(text, add_special_tokens=False).input_ids
    if len(set(script)) != len(script):
        raise ValueError(f"{text!r} repeats a token: the script needs distinct tokens")
    table = lm.get_input_embeddings().weight  # [V, D]
    successor = {a: b for a, b in zip(script, script[1:])} | {script[-1]: tok.eos_token_id}
    last: list = []  # the last input token of each row, [B], from each call's pre-hook to its hook

    def before(module, args, kwargs):
        model.lm_calls = getattr(model, "lm_calls", 0) + 1
        ids = kwargs.get("input_ids")
        if ids is not None:
            last.append(ids[:, -1])
        else:
            last.append(torch.cdist(kwargs["inputs_embeds"][:, -1].float(), table.float()).argmin(-1))

    def after(module, args, kwargs, out):
        wanted = torch.tensor([successor.get(int(i), script[0]) for i in last.pop()])  # others start the script
        logits = out.logits[:, -1]  # [B, V], a view: edited in place
        logits.fill_(-1e4)
        logits[torch.arange(len(wanted)), wanted] = 1e4
        return out

    return [lm.register_forward_pre_hook(before, with_kwargs=True), lm.register_forward_hook(after, with_kwargs=True)]


if __name__ == "__main__":  # python -m frozen.core.tiny outputs/tiny_lm [gpt2|llama|qwen2|opt]
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "outputs/tiny_lm"
    print(save_tiny_lm(target, sys.argv[2] if len(sys.argv) > 2 else "gpt2"))
